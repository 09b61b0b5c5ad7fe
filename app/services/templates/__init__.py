"""Templates (seed §15): versioned store, sandboxed rendering, template sends."""
