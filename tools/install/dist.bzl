"""warren_dist: what tools/install.sh installs, derived from the library's own targets.

Nothing here lists a source or a header. From the CcInfo of `deps` it takes, transitively:
  - every header of this repository (generated ones such as codec/methods.h included), copied
    to include/<path in the repository>, so that an application includes them as code inside
    the workspace does ("engine/client/connection.h");
  - every object file of this repository, compiled position-independent, into one static
    archive (libwarren.a) and one shared library (libwarren.so, with a soname);
  - a manifest naming the version, the soname, the targets of other repositories the library
    depends on (@system//:tbb, ...) and the link flags of this repository's targets, from
    which install.sh writes warren.pc and warren's CMake package.
It fails the build when the library would carry a header or an object of another repository, or
a header from tests/ or third_party/: an installed header must not need what is not installed.
"""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

_NOT_INSTALLED = ("tests/", "third_party/")

def _is_ours(label):
    return label.workspace_name == ""

def _soname(name, version):
    major, minor = version.split(".")[0:2]

    # Before 1.0 every minor release may change the ABI.
    return "lib%s.so.%s" % (name, major if major != "0" else major + "." + minor)

def _warren_dist_impl(ctx):
    cc_infos = [d[CcInfo] for d in ctx.attr.deps]
    cc_info = cc_common.merge_cc_infos(cc_infos = cc_infos)
    name = ctx.attr.library_name

    # Headers: this repository's only.
    headers = []
    for h in cc_info.compilation_context.headers.to_list():
        if not _is_ours(h.owner):
            fail("%s: header %s comes from another repository (%s); an installed header " %
                 (ctx.label, h.short_path, h.owner) + "may only include system headers and warren's own")
        if h.short_path.startswith(_NOT_INSTALLED):
            fail("%s: header %s (%s) is reachable from the library, but tests/ and third_party/ " %
                 (ctx.label, h.short_path, h.owner) + "are not installed")
        headers.append(h)

    # Objects (PIC: fit for executables and shared libraries alike), external dependencies and
    # this repository's link flags.
    objects = []
    external = []
    flags = []  # this repository's, for the manifest
    link_flags = []  # everyone's, for the shared library
    for li in cc_info.linking_context.linker_inputs.to_list():
        ours = li.owner != None and _is_ours(li.owner)
        if not ours:
            external.append(str(li.owner))
        for lib in li.libraries:
            objs = lib.pic_objects or lib.objects
            if not ours:
                if objs or lib.static_library or lib.pic_static_library:
                    fail("%s: %s would be bundled into lib%s; link it as a system library" %
                         (ctx.label, li.owner, name))
                continue
            if not objs and (lib.static_library or lib.pic_static_library):
                fail("%s: %s has an archive but no object files to bundle" % (ctx.label, li.owner))
            objects.extend(objs)
        for f in li.user_link_flags:
            if f not in link_flags:
                link_flags.append(f)
            if ours and f not in flags:
                flags.append(f)

    if not objects:
        fail("%s: no object files reachable from %s" % (ctx.label, ctx.attr.deps))

    # include/<path>: copied by one action, so generated and source headers land alike.
    include_dir = ctx.actions.declare_directory(ctx.label.name + "/include")
    args = ctx.actions.args()
    args.add(include_dir.path)
    for h in headers:
        args.add(h.path)
        args.add(h.short_path)
    ctx.actions.run_shell(
        inputs = headers,
        outputs = [include_dir],
        arguments = [args],
        command = 'out=$1; shift; while (($#)); do mkdir -p "$out/$(dirname "$2")" && ' +
                  'cp "$1" "$out/$2"; shift 2; done',
        mnemonic = "WarrenDistHeaders",
        progress_message = "Collecting warren's installed headers",
    )

    # lib<name>.a: plain append (q), since object basenames repeat across packages (error.o in
    # codec/ and engine/io/) and "r" would replace one with the other.
    cc_toolchain = find_cpp_toolchain(ctx)
    archive = ctx.actions.declare_file(ctx.label.name + "/lib%s.a" % name)
    ar_args = ctx.actions.args()
    ar_args.add(cc_toolchain.ar_executable)
    ar_args.add(archive.path)
    ar_args.add_all(objects)
    ctx.actions.run_shell(
        inputs = depset(objects, transitive = [cc_toolchain.all_files]),
        outputs = [archive],
        arguments = [ar_args],
        command = 'ar=$1 out=$2; shift 2; rm -f "$out" && "$ar" qcD "$out" "$@" && "$ar" sD "$out"',
        mnemonic = "WarrenDistArchive",
        progress_message = "Archiving lib%s.a" % name,
    )

    # lib<name>.so: the same objects, linked whole, with the system libraries they need.
    soname = _soname(name, ctx.attr.version)
    feature_configuration = cc_common.configure_features(
        ctx = ctx,
        cc_toolchain = cc_toolchain,
        requested_features = ctx.features,
        unsupported_features = ctx.disabled_features,
    )
    linking_outputs = cc_common.link(
        actions = ctx.actions,
        feature_configuration = feature_configuration,
        cc_toolchain = cc_toolchain,
        compilation_outputs = cc_common.create_compilation_outputs(
            objects = depset(objects),
            pic_objects = depset(objects),
        ),
        user_link_flags = ["-Wl,-soname," + soname, "-Wl,--no-undefined"] + link_flags,
        name = name,
        output_type = "dynamic_library",
    )
    lib = linking_outputs.library_to_link
    shared = lib.resolved_symlink_dynamic_library or lib.dynamic_library

    manifest = ctx.actions.declare_file(ctx.label.name + "/manifest.txt")
    lines = [
        "version\t" + ctx.attr.version,
        "soname\t" + soname,
        "archive\t" + archive.short_path,
        "shared\t" + shared.short_path,
        "include\t" + include_dir.short_path,
    ]
    lines += ["external\t" + e for e in external]
    lines += ["flag\t" + f for f in flags]
    ctx.actions.write(manifest, "\n".join(lines) + "\n")

    return [DefaultInfo(files = depset([include_dir, archive, shared, manifest]))]

warren_dist = rule(
    implementation = _warren_dist_impl,
    doc = "The installable form of a C++ library and its dependencies (see the file's comment).",
    attrs = {
        "deps": attr.label_list(providers = [CcInfo], mandatory = True),
        "library_name": attr.string(mandatory = True),
        "version": attr.string(mandatory = True),
        "_cc_toolchain": attr.label(
            default = Label("@bazel_tools//tools/cpp:current_cc_toolchain"),
        ),
    },
    fragments = ["cpp"],
    toolchains = ["@bazel_tools//tools/cpp:toolchain_type"],
)
