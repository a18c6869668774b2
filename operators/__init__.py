"""MONAI Deploy operators of the BiomedCLIP SR app.

Each ``*_operator`` module is a thin MONAI Deploy adapter over a pure module of the same name that
can be used and tested without Holoscan.
"""
