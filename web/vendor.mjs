// Copy the files the litefer page loads from node_modules (installed by `npm ci`) into
// src/litefer/serve/static/vendor/, and write manifest.json (package versions, file list). Files over
// 1 MB (opencv.js, the WebAssembly runtime) are stored gzipped only, as <name>.gz: the server sends
// them with Content-Encoding: gzip (25 MB -> 7 MB in the wheel and over the network).
// The server reads the manifest to tell the page what is available. Run by `make web`.
import { copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const dest = join(here, "..", "src", "litefer", "serve", "static", "vendor");

// package -> [source path inside the package, destination path inside vendor/]
const FILES = {
  "onnxruntime-web": [
    ["dist/ort.wasm.min.js", "ort/ort.wasm.min.js"],
    ["dist/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.mjs"],
    ["dist/ort-wasm-simd-threaded.wasm", "ort/ort-wasm-simd-threaded.wasm"],
    ["LICENSE", "ort/LICENSE"],
  ],
  "@techstark/opencv-js": [
    ["dist/opencv.js", "opencv/opencv.js"],
    ["LICENSE", "opencv/LICENSE"],
  ],
  "swagger-ui-dist": [
    ["swagger-ui-bundle.js", "swagger/swagger-ui-bundle.js"],
    ["swagger-ui.css", "swagger/swagger-ui.css"],
    ["LICENSE", "swagger/LICENSE"],
  ],
};

function version(pkg) {
  const meta = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8"));
  return meta.version;
}

const staging = dest + ".tmp";
rmSync(staging, { recursive: true, force: true });
const GZIP_OVER = 1 << 20;
const manifest = { packages: {}, files: [], gzipped: [] };
for (const [pkg, files] of Object.entries(FILES)) {
  let v;
  try {
    v = version(pkg);
  } catch (e) {
    console.error(`vendor.mjs: ${pkg} is not installed in ${modules}; run \`npm ci\` in ${here} first`);
    process.exit(1);
  }
  manifest.packages[pkg] = v;
  for (const [src, dst] of files) {
    const to = join(staging, dst);
    mkdirSync(dirname(to), { recursive: true });
    try {
      copyFileSync(join(modules, pkg, src), to);
    } catch (e) {
      if (src === "LICENSE") continue; // a package without a LICENSE file at its root
      console.error(`vendor.mjs: ${pkg}@${v} has no ${src}: ${e.message}`);
      process.exit(1);
    }
    if (src !== "LICENSE") manifest.files.push(dst);
    if (src !== "LICENSE" && statSync(to).size > GZIP_OVER) {
      writeFileSync(to + ".gz", gzipSync(readFileSync(to), { level: 9 }));
      rmSync(to);
      manifest.gzipped.push(dst);
    }
  }
}
manifest.scripts = { ort: "ort/ort.wasm.min.js", ort_wasm_dir: "ort/", opencv: "opencv/opencv.js" };
writeFileSync(join(staging, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
// swap the finished folder in, so the server never sees a half-copied vendor/
rmSync(dest, { recursive: true, force: true });
renameSync(staging, dest);
console.log(`vendor.mjs: ${manifest.files.length} files from ${Object.keys(FILES).length} packages -> ${dest}`);
