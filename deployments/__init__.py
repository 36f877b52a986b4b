"""The composition root: Ray Serve deployments, typed app builders and the `dwaybank` CLI.

Everything is wired here: settings become resources, resources become routers, routers become
the ingress applications named by `serve_config.yaml`. It is the only package that sees every
other one.
"""
