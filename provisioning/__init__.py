"""Adapter setup, kept apart from the device objects (the pytun contrast in STYLE.md):
`linux` applies addresses, MTU and link state through ioctls and creates persistent
devices; `plan` and `windows` describe the Windows setup as data that
`tools/provision.ps1` reads too."""
