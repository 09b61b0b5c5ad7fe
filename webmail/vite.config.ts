/// <reference types="vitest/config" />
// The webmail is built into the Python package (app/web/static/webmail/), which serves
// index.html at / and the hashed bundles under /assets/. `npm run dev` proxies the API to a
// `mailhub dev` on MAILHUB_DEV_API (default http://127.0.0.1:8000).
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

declare const process: { env: Record<string, string | undefined> };
const api = process.env.MAILHUB_DEV_API ?? 'http://127.0.0.1:8000';

export default defineConfig({
  base: '/',
  plugins: [react()],
  build: {
    outDir: '../app/web/static/webmail',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
  },
  server: {
    host: '127.0.0.1',
    port: 5173,
    proxy: {
      '/graphql': { target: api, ws: true, changeOrigin: false },
      '/api': { target: api },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
