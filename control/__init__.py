"""The control plane: the PAT API and alerting (see the control-plane issue)."""
