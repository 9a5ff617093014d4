"""What the tests share: starting real processes, fake peers (a Kubernetes API, an OTLP collector), fixtures' data."""
