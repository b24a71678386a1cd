"""`gated demo`: a scripted day at the door, through the real decision path."""

from __future__ import annotations


def cmd_demo(args) -> int:
    from gated.demo import run_demo

    return run_demo()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a scripted day at the door, through the real decision path")
    p.set_defaults(func=cmd_demo)
