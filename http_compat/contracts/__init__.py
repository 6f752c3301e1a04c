"""One module per REST contract of ../shared/contracts; each has `build(engine, settings) -> Api`."""
