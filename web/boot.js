// Starts the portal: loads the wasm-bindgen glue and the wasm module (names filled in by build-web.sh).
import init from "/assets/{{JS}}";
// The console (noVNC, xterm.js) is fetched only when one opens, so the first load stays small.
window.nimbusConsole = (element, session, onState) =>
  import("/assets/{{CONSOLE}}").then((m) => m.open(element, session, onState));
init({ module_or_path: "/assets/{{WASM}}" });
