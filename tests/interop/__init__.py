"""Interop tests: real Trystero 0.25.4 peers in Node.js, driven from pytest."""
