"""An endpoint's model server: ``python -m shipyard.serving.runtime --config FILE``.

One process per endpoint. The server process speaks HTTP (a raw ASGI app on uvicorn with
httptools, uvloop and TCP_NODELAY), routes each request to a variant, queues it in that model's
lane, and hands batches to model workers; the workers decode, validate, predict and encode.

    app.py         routes: Open Inference Protocol v2, SageMaker's /ping and /invocations,
                   /shipyard/stats and /shipyard/reload
    endpoint.py    the endpoint's state over its life: boot, shadow, capture, reload, stats
    state.py       routing snapshots (A/B weights), per-variant figures
    pool.py        lanes (a queue per model), adaptive batching, scaling, crash recovery
    workers.py     the two kinds of worker as the server sees them: a thread, or a process
    worker.py      the worker process's own loop
    engine.py      loaded models and how a batch runs through one (in the worker)
    codec.py       request bodies to model inputs, predictions to response bodies
    multimodel.py  many models behind one endpoint, loaded on demand, evicted LRU
    capture.py     sampled request/response capture as JSONL files
    meta.py        model metadata read from a manifest, without loading the model
    config.py      the config file and its checks
    wire.py        content types and the error body (shared, no numpy)
    lean_skops.py  skops imported without its list of every estimator (the allow-list decides)
    imports.py     pandas kept out where every model takes its float matrix; PyArrow, Rich
                   and charset_normalizer kept out where no model's code runs (no_pandas.py,
                   no_pyarrow.py and no_extras.py apply them)

Worker mode. With ``max_workers`` 1 (``worker_mode: "auto"``) the model runs in one thread of
the server process; with more, in worker processes forked from a fork server that preloaded
the model libraries. Measured side by side on the project's 2-core machine, quiet (wrk on the
same machine, one-row requests, a LogisticRegression / a 100-tree RandomForest on 20 features):

    /invocations               thread           process          bare FastAPI
    c=1  p50 (ms)              0.39 / 4.87      0.36 / 5.07      1.48 / 6.08
    c=32 requests/s            13,678 / 4,020   19,163 / 4,816   546 / 91
    memory, PSS (MB)           169-183          239-290          177

(in-process ``model.predict`` on a one-row DataFrame: 0.54 / 4.81 ms; PyTriton's dynamic
batcher over OIP at c=32: 3,321 / 1,936 requests/s.) The thread answers as fast at
concurrency 1 and holds the memory of a bare uvicorn process with the same model; the
processes give 20-40% more at concurrency 32 (two cores instead of one interpreter) for about
60 MB more (the fork server and a second interpreter), and isolation: a model that crashes
the interpreter takes a thread-mode endpoint down, where a worker process is restarted with a
503 for its own requests only. ``worker_mode: "process"`` chooses that for one worker.
"""
