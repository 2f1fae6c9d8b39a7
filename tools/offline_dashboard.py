"""Make the dashboard that `asv publish` wrote self-contained.

asv 0.6 writes pages that load jQuery, Flot and its plugins, flot-orderbars,
stupidtable, blueimp-md5 and Bootstrap from public CDNs.  Without internet the
dashboard is only an error page.  This script takes the same libraries from
the npm registry at build time (``npm pack``, cached under ``.asv/vendor-build``,
never committed), copies the files the pages need into ``<html>/vendor/`` and
rewrites every page to load them from there, with integrity hashes of the
files actually served.

Usage: python -m tools.offline_dashboard [--html .asv/html] [--cache .asv/vendor-build]

It fails (exit 1) if a page still refers to a script or stylesheet on another
host afterwards, e.g. because a newer asv added a library not mapped below.
"""
import argparse
import base64
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import tarfile

# CDN address -> (npm package spec, file inside the package, extra files or
# folders inside the package that the file refers to by relative path).
# The npm files are byte-identical to the CDN ones for jQuery, flot-orderbars,
# blueimp-md5 and Bootstrap; Flot 0.8.3 on npm has no minified files, so the
# unminified ones are served; stupidtable 1.0.1 is not on npm, the nearest
# published release (stupid-table-plugin 1.1.3, same API) is served.
CDN_MAP = {
    "https://code.jquery.com/jquery-3.3.1.min.js":
        ("jquery@3.3.1", "dist/jquery.min.js", []),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js":
        ("flot@0.8.3", "jquery.flot.js", []),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js":
        ("flot@0.8.3", "jquery.flot.time.js", []),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        ("flot@0.8.3", "jquery.flot.selection.js", []),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        ("flot@0.8.3", "jquery.flot.categories.js", []),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        ("flot-orderbars@1.0.0", "js/jquery.flot.orderBars.js", []),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        ("stupid-table-plugin@1.1.3", "stupidtable.min.js", []),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js":
        ("blueimp-md5@2.19.0", "js/md5.min.js", []),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js":
        ("bootstrap@3.1.1", "dist/js/bootstrap.min.js", []),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        ("bootstrap@3.1.1", "dist/css/bootstrap.min.css", ["dist/fonts"]),
}

# <script ... src="http..."> and <link ... href="http..."> tags
TAG_RE = re.compile(r"<(script|link)\b([^>]*?)\s(src|href)=\"(https?://[^\"]+)\"([^>]*)>", re.I)
ATTR_DROP_RE = re.compile(r"\s(integrity|crossorigin|referrerpolicy)=\"[^\"]*\"", re.I)


def sri(path):
    with open(path, "rb") as f:
        digest = hashlib.sha384(f.read()).digest()
    return "sha384-" + base64.b64encode(digest).decode()


def fetch(spec, cache):
    """Return the folder of the unpacked npm package `spec` (name@version)."""
    name, version = spec.rsplit("@", 1)
    unpacked = os.path.join(cache, f"{name}-{version}")
    if os.path.isdir(os.path.join(unpacked, "package")):
        return os.path.join(unpacked, "package")
    os.makedirs(cache, exist_ok=True)
    tgz = os.path.join(cache, f"{name.replace('/', '-').lstrip('@')}-{version}.tgz")
    if not os.path.exists(tgz):
        if not shutil.which("npm"):
            raise SystemExit("error: npm not found; the dashboard's libraries come from the npm "
                             "registry (install Node.js and npm, e.g. `apt-get install npm`)")
        print(f"  npm pack {spec}", flush=True)
        # npm checks the tarball against the registry's integrity value.
        subprocess.run(["npm", "pack", "--silent", spec, "--pack-destination", cache],
                       check=True, stdout=subprocess.DEVNULL)
    tmp = unpacked + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(tgz) as tar:
        tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
    os.replace(tmp, unpacked)
    return os.path.join(unpacked, "package")


def copy_into(src_root, rel, dest_root):
    src = os.path.join(src_root, rel)
    dest = os.path.join(dest_root, rel)
    if os.path.isdir(src):
        shutil.copytree(src, dest, dirs_exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(src, dest)
    return dest


def cdn_integrity(attrs):
    m = re.search(r"integrity=\"([^\"]+)\"", attrs)
    return m.group(1) if m else None


def matches_cdn(path, integrity):
    """True if the served file has the hash the CDN tag pinned (same bytes)."""
    if not integrity:
        return False
    algo, _, want = integrity.partition("-")
    with open(path, "rb") as f:
        got = base64.b64encode(hashlib.new(algo, f.read()).digest()).decode()
    return got == want


def rewrite_page(page, html_dir, cache, seen):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    unknown = []

    def repl(m):
        tag, before, attr, url, after = m.groups()
        url = html.unescape(url)
        if url not in CDN_MAP:
            unknown.append(url)
            return m.group(0)
        spec, rel, extras = CDN_MAP[url]
        pkg_dir = fetch(spec, cache)
        dest_root = os.path.join(html_dir, "vendor", spec.replace("@", "-").lstrip("-"))
        served = copy_into(pkg_dir, rel, dest_root)
        for extra in extras:
            copy_into(pkg_dir, extra, dest_root)
        local = os.path.relpath(served, os.path.dirname(page)).replace(os.sep, "/")
        same = matches_cdn(served, cdn_integrity(before + after))
        seen.append((url, local, "same bytes as the CDN file" if same else "npm release file"))
        before = ATTR_DROP_RE.sub("", before)
        after = ATTR_DROP_RE.sub("", after)
        after = after.rstrip("/").rstrip()
        close = " />" if m.group(0).endswith("/>") else ""
        return (f'<{tag}{before} {attr}="{local}" integrity="{sri(served)}"'
                f'{after}{close}{">" if not close else ""}')

    new = TAG_RE.sub(repl, text)
    if new != text:
        with open(page, "w", encoding="utf-8") as f:
            f.write(new)
    return unknown


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=".asv/html", help="folder asv publish wrote")
    ap.add_argument("--cache", default=".asv/vendor-build",
                    help="where npm packages are downloaded and unpacked (reused)")
    args = ap.parse_args(argv)
    index = os.path.join(args.html, "index.html")
    if not os.path.exists(index):
        print(f"error: {index} not found; run `asv publish` first", file=sys.stderr)
        return 1
    pages = []
    for root, _dirs, files in os.walk(args.html):
        if os.path.join(args.html, "vendor") in root:
            continue
        pages += [os.path.join(root, f) for f in files if f.endswith(".html")]
    seen, unknown = [], []
    for page in sorted(pages):
        unknown += rewrite_page(page, args.html, os.path.abspath(args.cache), seen)
    # Whatever the tags look like, nothing may still load from another host.
    leftovers = []
    for page in pages:
        with open(page, encoding="utf-8") as f:
            for m in re.finditer(r"<(?:script|link)\b[^>]*(?:src|href)=\"(https?:)?//[^\"]+\"", f.read(), re.I):
                if "rel=\"alternate\"" not in m.group(0):
                    leftovers.append((page, m.group(0)))
    for url, local, how in sorted(set(seen)):
        print(f"  {local}  <- {url} ({how})")
    if unknown or leftovers:
        for page, tag in leftovers:
            print(f"error: {page} still loads from another host: {tag}", file=sys.stderr)
        print("error: add the library to CDN_MAP in tools/offline_dashboard.py", file=sys.stderr)
        return 1
    packages = {local.split("/")[1] for _, local, _ in seen if "/" in local}
    print(f"dashboard in {args.html} is self-contained: {len(set(seen))} files "
          f"from {len(packages)} npm packages served from vendor/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
