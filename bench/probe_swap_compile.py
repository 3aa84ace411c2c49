"""What swapping in a retrained LSTM costs the process that serves it (not a test).

    python bench/probe_swap_compile.py

What would it cost if a retrained model came back as a new Keras network, which
``models.forecast.tfrt.Inference`` would compile again (its one shape of ``INFER_ROWS`` rows)?
This builds three new networks of the bandwidth forecaster's size (LSTM 32, window 30 x 8
features) and times each one's first answer (its compile) and the process CPU it took; then
new weights set into a network that is already compiled, which is what a swap does. Prints
one line each.
"""

from __future__ import annotations

import time

import numpy as np

from models.forecast.tfrt import Inference, infer_padded, tensorflow


def _net():  # type: ignore[no-untyped-def]
    tensorflow()
    import keras

    return keras.Sequential([keras.Input((30, 8)), keras.layers.LSTM(32), keras.layers.Dense(3)])


def main() -> None:
    x = np.random.default_rng(0).normal(size=(100, 30, 8)).astype(np.float32)
    for k in range(3):
        net = _net()
        inf = Inference(net, 30, 8)
        t0, cpu0 = time.perf_counter(), time.process_time()
        infer_padded(inf, x)  # compiles its one shape
        t1, cpu = time.perf_counter(), time.process_time() - cpu0
        print(f"new network {k}: first answer {t1 - t0:.2f} s, process CPU {cpu:.2f} s")
    net = _net()
    inf = Inference(net, 30, 8)
    infer_padded(inf, x)
    t0, cpu0 = time.perf_counter(), time.process_time()
    net.set_weights([w * 1.01 for w in net.get_weights()])
    infer_padded(inf, x)
    print(f"the same network, new weights: {time.perf_counter() - t0:.3f} s, "
          f"process CPU {time.process_time() - cpu0:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
