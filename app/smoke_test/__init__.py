"""``python -m app.smoke_test``: the post-install check a site runs on a deployment (docs/deployment.md)."""
