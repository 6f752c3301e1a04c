// The studio's script: what server-rendered pages cannot do alone (live updates, actions).
