"""Speed, measured fairly: the benchmark matrix and device-run import (`bench`), the machine's fp32 peak that every
efficiency is a share of (`fp32_peak`), and the Markdown report with its plots (`report`)."""
