"""Generated code of the wire package ``phe_fl.v1`` (from proto/phe_fl/v1/*.proto by
``python proto/generate.py``). Only ``phe_fl.federation.serde`` and the servicers use it."""
