"""FiftyOne's CVAT backend with deadlines: every request gets :data:`HTTP_TIMEOUT_S`, and the
poll for a new task's jobs ends after :data:`JOBS_TIMEOUT_S` (FiftyOne's own has neither).
Imported only once the curation session has configured FiftyOne; FiftyOne finds
:class:`DeadlineCVATBackend` from its config class's name (same module, without ``Config``)."""

from __future__ import annotations

import time

from fiftyone.utils.cvat import CVATAnnotationAPI, CVATBackend, CVATBackendConfig

from daad.curate.cvat import CVATError

HTTP_TIMEOUT_S = 60.0
"""Every request FiftyOne's backend sends to CVAT."""
JOBS_TIMEOUT_S = 120.0
"""How long a task's jobs may take to appear after its images are uploaded."""


class DeadlineCVATAnnotationAPI(CVATAnnotationAPI):
    """FiftyOne's CVAT API with a timeout on every request and a deadline on the job poll."""

    def _make_request(self, request_method, url, print_error_info=True, **kwargs):
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return super()._make_request(request_method, url, print_error_info=print_error_info, **kwargs)

    def upload_data(self, task_id, paths, **kwargs):
        self._jobs_deadline = time.monotonic() + JOBS_TIMEOUT_S
        try:
            return super().upload_data(task_id, paths, **kwargs)
        finally:
            del self._jobs_deadline

    def _get_job_ids(self, task_id):
        job_ids = super()._get_job_ids(task_id)
        if not job_ids and time.monotonic() > getattr(self, "_jobs_deadline", float("inf")):
            raise CVATError(f"CVAT at {self.base_url}: task {task_id} has no job {JOBS_TIMEOUT_S:g}s after its "
                            "images were uploaded")
        return job_ids


class DeadlineCVATBackendConfig(CVATBackendConfig):
    """FiftyOne's CVAT backend config; builds :class:`DeadlineCVATBackend` (same module, by name)."""


class DeadlineCVATBackend(CVATBackend):
    """FiftyOne's CVAT backend talking through :class:`DeadlineCVATAnnotationAPI`."""

    def _connect_to_api(self):
        return DeadlineCVATAnnotationAPI(
            self.config.name, self.config.url, username=self.config.username, email=self.config.email,
            password=self.config.password, headers=self.config.headers, organization=self.config.organization)
