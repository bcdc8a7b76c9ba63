"""The Escriba autoscaling operator (kopf): scales transcription on backlog seconds and GPU load."""
