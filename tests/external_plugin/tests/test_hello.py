"""The plugin's own test: partbench's encoder conformance kit on it."""

from harness.testing import check_encoder


def test_hello_histogram_conforms():
    # declared shapes and dtypes, the token grid at two input sizes, determinism, independence of the batch;
    # a plugin with a file option also gets its validate() tried on a wrong file (one-line error naming it)
    report = check_encoder("hello_histogram", {"bins": 4})
    assert report["representations"] == ["cls", "mean_patch", "tokens"]
