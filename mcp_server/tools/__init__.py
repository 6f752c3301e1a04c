"""Atelier's MCP tools, one module per thing a model does with them (images, runs, status).

Each module's `tools(engine, ...)` returns its tools in the order clients list them; `build_mcp`
assembles the lists. Importing a module registers nothing.
"""
