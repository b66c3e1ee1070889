"""WhisperLive's server on 127.0.0.1, for bench_realtime.py; run with WhisperLive's own interpreter.

The whisper-live wheel ships the server class but not the script that starts it, so this is that script:
the faster_whisper backend with one shared model loaded from a local CTranslate2 folder (int8 on CPU: the
backend picks int8 whenever CUDA is absent), and OMP_NUM_THREADS=1 unless set, the defaults of the
run_server.py in WhisperLive's repository.

    /path/to/whisperlive-venv/bin/python benchmarks/peer_whisperlive.py PORT MODEL_DIR [MAX_CLIENTS]
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from whisper_live.server import TranscriptionServer

    port, model_dir = int(sys.argv[1]), sys.argv[2]
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    TranscriptionServer().run(
        "127.0.0.1",
        port=port,
        backend="faster_whisper",
        faster_whisper_custom_model_path=model_dir,
        single_model=True,
        max_clients=clients,
        max_connection_time=3600,
    )


if __name__ == "__main__":
    main()
