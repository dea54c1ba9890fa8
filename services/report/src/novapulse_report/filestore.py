"""The default :class:`~novapulse_report.ports.FileStore`: MongoDB GridFS (bucket ``files`` of the service's
database). Files are streamed in and out in GridFS chunks (255 KiB): memory never holds a whole file.

Reads go through pymongo's asynchronous GridFS bucket. Writes insert the chunks and then the file document
themselves (the GridFS spec's two collections and shapes, so the bucket reads them): pymongo's upload stream
holds up to 48 MB of chunks before it sends them (``_UPLOAD_BUFFER_SIZE``), which for a 13 MB XLSX file was
a 20-30 MB peak in the worker; here at most ``FLUSH_CHUNKS`` chunks wait."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bson import Int64, ObjectId
from gridfs.asynchronous.grid_file import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from novapulse_runtime.documents import Doc

from .constants import DOWNLOAD_PIECE_BYTES

BUCKET = "files"
CHUNK_BYTES = 255 * 1024
"""GridFS's default chunk size."""
FLUSH_CHUNKS = 4
"""Chunks sent per ``insert_many`` while writing a file (memory: about 1 MB)."""


class GridFsStore:
    """Report files in GridFS; a file's name is its address (``<report id>/part-000001``), its metadata
    names its report and kind (``{"report_id", "kind"}``) for deleting them together."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.bucket = AsyncGridFSBucket(db, bucket_name=BUCKET)
        self.chunks = db[f"{BUCKET}.chunks"]

    async def ensure_indexes(self) -> None:
        """The GridFS spec's indexes (the bucket would make them on its first upload; this store uploads
        itself) and the one :meth:`delete_files` queries by."""
        await self.db[f"{BUCKET}.files"].create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        await self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        await self.db[f"{BUCKET}.files"].create_index("metadata.report_id")

    async def write(self, name: str, pieces: AsyncIterable[bytes], metadata: dict[str, Any]) -> int:
        """Store ``pieces`` as ``name``; an earlier file of that name (a part written by a worker that died)
        is deleted first, and a failed upload leaves no file behind (the file document, written last, is
        what makes a file visible; chunks of a failed upload are deleted). Returns the size in bytes."""
        await self.delete(name)
        file_id = ObjectId()
        size = number = 0
        pending = bytearray()
        batch: list[Doc] = []
        try:
            async for piece in pieces:
                size += len(piece)
                pending += piece
                while len(pending) >= CHUNK_BYTES:
                    batch.append({"files_id": file_id, "n": number, "data": bytes(pending[:CHUNK_BYTES])})
                    del pending[:CHUNK_BYTES]
                    number += 1
                    if len(batch) >= FLUSH_CHUNKS:
                        await self.chunks.insert_many(batch)
                        batch = []
            if pending:
                batch.append({"files_id": file_id, "n": number, "data": bytes(pending)})
            if batch:
                await self.chunks.insert_many(batch)
            await self.db[f"{BUCKET}.files"].insert_one(
                {
                    "_id": file_id,
                    "length": Int64(size),
                    "chunkSize": CHUNK_BYTES,
                    "uploadDate": datetime.now(UTC),
                    "filename": name,
                    "metadata": metadata,
                }
            )
        except BaseException:
            await self.chunks.delete_many({"files_id": file_id})
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
