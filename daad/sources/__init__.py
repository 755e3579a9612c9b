"""Getting sources' files onto this machine and into manifests: HTTP downloads (``http``), safe
archive unpacking (``archives``), the archive-pinned sources (``archive_sources``, ``daad
download``), the images of URL records (``url_images``, ``daad fetch``) and a loader's records
into a manifest (``ingest``, ``daad ingest``)."""
