"""`python -m tests.io.gcs_emulator start ...`: gcp-storage-emulator (its own command line)
with the object generation in the headers of a media download, as GCS sends it
(x-goog-generation, x-goog-metageneration; https://cloud.google.com/storage/docs/xml-api/
reference-headers). The emulator leaves them out, and tensorstore, which reads an OCDBT
manifest back while an Orbax save of many arrays updates it, then fails with "Malformed
StorageGeneration". Patched before the emulator's server module builds its route table."""

import sys

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        obj = None
    if obj is not None:
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj["metageneration"])
    return _download(request, response, storage, *args, **kwargs)


objects.download = download

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
