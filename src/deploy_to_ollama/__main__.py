"""``python -m deploy_to_ollama`` runs the CLI."""

from deploy_to_ollama.cli import main

main()
