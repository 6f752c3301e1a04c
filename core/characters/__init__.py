"""Characters: a named subject with training images and the LoRA versions trained from them.

`core.characters.models` is what a character is; `core.characters.uploads` checks one training
image; `core.characters.catalog` keeps characters (rows in the ledger, files under
`ATELIER_HOME/characters/<id>/`).
"""
