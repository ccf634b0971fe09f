"""Test doubles shared by the tests and the benchmarks: a local server speaking Flickr's JSON."""
