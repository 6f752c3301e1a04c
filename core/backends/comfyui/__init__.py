"""The ComfyUI backend: a client per server (`client`), workflows with parameter maps
(`workflows`), and the pool (`pool`). Import the module you need: the pool's HTTP client is not
loaded for the workflows alone, which the preview renderer uses too."""
