// Starts the portal: loads the wasm-bindgen glue and the wasm module (names filled in by build-web.sh).
import init from "/assets/{{JS}}";
init({ module_or_path: "/assets/{{WASM}}" });
