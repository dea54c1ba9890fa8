"""The default :class:`~novapulse_report.ports.FileStore`: MongoDB GridFS (bucket ``files`` of the service's
database), through pymongo's asynchronous GridFS bucket. Files are streamed in and out in GridFS chunks
(255 KiB): memory never holds a whole file."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from gridfs.asynchronous.grid_file import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo.asynchronous.database import AsyncDatabase

from novapulse_runtime.documents import Doc

from .constants import DOWNLOAD_PIECE_BYTES

BUCKET = "files"


class GridFsStore:
    """Report files in GridFS; a file's name is its address (``<report id>/part-000001``), its metadata
    names its report and kind (``{"report_id", "kind"}``) for deleting them together."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.bucket = AsyncGridFSBucket(db, bucket_name=BUCKET)

    async def ensure_indexes(self) -> None:
        await self.db[f"{BUCKET}.files"].create_index("metadata.report_id")

    async def write(self, name: str, pieces: AsyncIterable[bytes], metadata: dict[str, Any]) -> int:
        """Store ``pieces`` as ``name``; an earlier file of that name (a part written by a worker that died)
        is deleted first, and a failed upload leaves no file behind. Returns the size in bytes."""
        await self.delete(name)
        upload = self.bucket.open_upload_stream(name, metadata=metadata)
        size = 0
        try:
            async for piece in pieces:
                await upload.write(piece)
                size += len(piece)
            await upload.close()
        except BaseException:
            await upload.abort()
            raise
        return size

    async def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        try:
            grid_out = await self.bucket.open_download_stream_by_name(name)
        except NoFile as exc:
            raise FileNotFoundError(name) from exc
        try:
            stop = grid_out.length if end is None else min(end, grid_out.length)
            if start:
                await grid_out.seek(start)
            left = stop - start
            while left > 0:
                piece = await grid_out.read(min(DOWNLOAD_PIECE_BYTES, left))
                if not piece:
                    break
                left -= len(piece)
                yield piece
        finally:
            await grid_out.close()

    async def delete(self, name: str) -> None:
        async for found in self.bucket.find({"filename": name}):
            await self.bucket.delete(found._id)

    async def delete_files(self, report_id: str, kind: str | None = None) -> int:
        # equality on metadata only: the MongoDB-wire development server answers range and regex queries
        # on GridFS file names with nothing
        query: Doc = {"metadata.report_id": report_id}
        if kind is not None:
            query["metadata.kind"] = kind
        ids = [found._id async for found in self.bucket.find(query)]
        for file_id in ids:
            await self.bucket.delete(file_id)
        return len(ids)
