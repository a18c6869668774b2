"""``python -m app.inference_server``: the Triton Inference Server for the package's model repository,
on loopback (``docs/deployment.md``)."""
