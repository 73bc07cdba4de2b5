"""warren_fuzz_target: one fuzz target, buildable two ways, with its seed corpus replayed as a test.

Normal builds (gcc, and --config=asan|ubsan): the target links standalone_main.cc, a main() that
runs LLVMFuzzerTestOneInput over the files and directories given on the command line.
--config=fuzz (clang 14, --define=warren_fuzz=libfuzzer): the target links libFuzzer instead
(-fsanitize=fuzzer), and fuzzes when run with a corpus directory.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")

# str(Label(...)) resolves against this file's repository, so the macro also works when warren is
# an external repository.
_LIBFUZZER = str(Label("//tests/fuzz:libfuzzer"))
_STANDALONE_MAIN = str(Label("//tests/fuzz:standalone_main"))

def _main_deps():
    return select({
        _LIBFUZZER: [],
        "//conditions:default": [_STANDALONE_MAIN],
    })

def _main_linkopts():
    return select({
        _LIBFUZZER: ["-fsanitize=fuzzer"],
        "//conditions:default": [],
    })

def warren_fuzz_target(name, srcs, deps = [], corpus = None, **kwargs):
    """Defines cc_binary `name` and cc_test `name + "_corpus_test"`.

    Args:
      name: the fuzzer binary.
      srcs: sources defining LLVMFuzzerTestOneInput (and optionally LLVMFuzzerInitialize).
      deps: libraries under test.
      corpus: directory (relative to this package) of seed inputs. Required: the corpus test fails
        when it holds no file, since a replay of nothing proves nothing.
      **kwargs: passed to both rules (e.g. tags, visibility).
    """
    if not corpus:
        fail("warren_fuzz_target %s: corpus is required" % name)

    # Compiled once, linked into both the fuzzer and the corpus test. alwayslink keeps
    # LLVMFuzzerTestOneInput, which only the main in another library refers to.
    cc_library(
        name = name + "_lib",
        testonly = True,
        srcs = srcs,
        deps = deps,
        alwayslink = True,
        visibility = ["//visibility:private"],
    )
    native.filegroup(
        name = name + "_corpus",
        srcs = native.glob([corpus + "/**"]),
    )
    cc_binary(
        name = name,
        testonly = True,
        deps = [":" + name + "_lib"] + _main_deps(),
        linkopts = _main_linkopts(),
        **kwargs
    )
    cc_test(
        name = name + "_corpus_test",
        deps = [":" + name + "_lib"] + _main_deps(),
        linkopts = _main_linkopts(),
        data = [":" + name + "_corpus"],
        args = ["$(rootpaths :" + name + "_corpus)"],
        **kwargs
    )
