"""One module or package per REST contract of ../shared/contracts (`adgen`, `comfygen`, and the
packages `pod`, `isengard`, `desktop`); each has `build(engine, settings) -> Api`."""
