"""The public API (TaskService): accepts uploads, records tasks, feeds the pipeline, reports progress."""
