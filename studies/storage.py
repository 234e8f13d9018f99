"""Private local storage: file URLs point at a permission-checked view, never at a public folder."""

from django.core.files.storage import FileSystemStorage, default_storage


class PrivateFileSystemStorage(FileSystemStorage):
    """Files under MEDIA_ROOT, served only by `studies.views.stored_file`."""


def storage_is_local() -> bool:
    return isinstance(default_storage, FileSystemStorage)
