"""`python -m crm_devtools ...`: the development tools' command line (crm_devtools.cli)."""

from crm_devtools.cli import main

main()
