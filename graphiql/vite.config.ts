import { defineConfig } from "vite";

// The bundle ships inside the Python package (app/web/static/graphiql) and is served at
// /graphiql/ by mailhub itself, so GET /graphql works offline under a strict CSP.
export default defineConfig({
  base: "/graphiql/",
  build: {
    outDir: "../app/web/static/graphiql",
    emptyOutDir: true,
    // CodeMirror 5 + React + GraphiQL is one ~1.5 MB chunk; a developer tool, not the SPA.
    chunkSizeWarningLimit: 4000,
    rollupOptions: {
      onwarn(warning, warn) {
        // radix-ui's "use client" lines are for React Server Components, meaningless here
        if (warning.code === "MODULE_LEVEL_DIRECTIVE") return;
        warn(warning);
      },
    },
  },
  // @graphiql/toolkit reads process.env.USE_IMPORT on its subscriptionUrl path (we pass a
  // wsClient instead, but the reference must not throw in a browser).
  define: { "process.env.USE_IMPORT": JSON.stringify("true") },
});
