"""POST /upload: streamed into PostgreSQL, processed by document_process; hostile input."""

from typing import Any

import asyncpg
import httpx

from tests.conftest import wait_terminal
from tests.pdfs import make_pdf

WORDS = "the quick brown fox jumps over the lazy dog while taskstream pushes progress "


async def upload(client: httpx.AsyncClient, name: str, data: bytes,
                 ctype: str = "application/octet-stream") -> httpx.Response:
    return await client.post("/upload", files={"file": (name, data, ctype)})


async def test_pdf_is_parsed_chunked_embedded_and_stored(client: httpx.AsyncClient,
                                                         pool: asyncpg.Pool) -> None:
    pdf = make_pdf([WORDS * 20, WORDS * 15, "final page " + WORDS * 5])
    r = await upload(client, "report.pdf", pdf, "application/pdf")
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) >= {"task_id", "status"} and body["filename"] == "report.pdf"
    done = await wait_terminal(client, body["task_id"])
    assert done["status"] == "completed", done
    res = done["result"]
    assert res["kind"] == "pdf" and res["pages"] == 3
    assert res["word_count"] == len((WORDS * 40 + "final page").split())
    stored = await pool.fetch(
        "SELECT c.chunk_index, c.page, vector_dims(v.embedding) AS dim FROM document_chunks c"
        " JOIN chunk_vectors v USING (task_id, chunk_index)"
        " WHERE c.task_id = $1::uuid ORDER BY c.chunk_index", body["task_id"])
    assert len(stored) == res["chunks"] > 1
    assert {r["page"] for r in stored} == {1, 2, 3} and stored[0]["dim"] == 256
    steps = (await client.get(f"/tasks/{body['task_id']}/steps")).json()
    assert [s["name"] for s in steps] == ["parse", "chunk", "embed-0", "store"]
    events = (await client.get(f"/tasks/{body['task_id']}/events")).json()["items"]
    messages = [e["message"] or "" for e in events if e["type"] == "progress"]
    assert any(m.startswith("parsed") for m in messages)
    assert any(m.startswith("embedded") for m in messages)


async def test_text_and_markdown(client: httpx.AsyncClient) -> None:
    md = b"# Title\n\nSome *bold* text and a [link](http://x).\n\n- item one\n- item two\n"
    r = await upload(client, "notes.md", md, "text/markdown")
    done = await wait_terminal(client, r.json()["task_id"])
    assert done["status"] == "completed" and done["result"]["kind"] == "markdown"
    assert done["result"]["word_count"] == 11  # markup stripped

    r = await upload(client, "plain.txt", (WORDS * 500).encode())
    done = await wait_terminal(client, r.json()["task_id"])
    assert done["result"]["kind"] == "text" and done["result"]["chunks"] > 3


async def test_bad_documents_fail_cleanly(client: httpx.AsyncClient) -> None:
    cases: dict[str, tuple[str, bytes]] = {
        "corrupt or unreadable PDF": ("broken.pdf", make_pdf([WORDS])[:150]),
        "is named .pdf but is not a PDF": ("fake.pdf", b"hello, I am text"),
        "not valid UTF-8": ("latin.txt", "caf\xe9 cr\xe8me".encode("latin-1")),
        "looks binary": ("blob.bin", b"\x00\x01\x02\x03" * 100),
    }
    for reason, (name, data) in cases.items():
        r = await upload(client, name, data)
        assert r.status_code == 202, r.text
        done = await wait_terminal(client, r.json()["task_id"])
        assert done["status"] == "failed", (name, done)
        assert reason in done["error"], (name, done["error"])
        assert "Traceback" not in done["error"]


async def test_upload_input_errors_are_4xx(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    before = await pool.fetchval("SELECT count(*) FROM uploads")
    r = await upload(client, "empty.txt", b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = await client.post("/upload", content=b"just bytes", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = await client.post("/upload", files={"other": ("a.txt", b"x")})
    assert r.status_code == 400 and "'file'" in r.json()["detail"]
    r = await client.post("/upload", content=b"--b\r\nContent-Disposition: form-data; name=\"file\""
                          b"; filename=\"a\"\r\n\r\nabc",
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400
    # Nothing half-written: the rejected uploads left no rows behind.
    assert await pool.fetchval("SELECT count(*) FROM uploads") == before


async def test_hostile_filenames_are_metadata_only(client: httpx.AsyncClient,
                                                   pool: asyncpg.Pool) -> None:
    hostile: dict[str, str] = {
        "../../etc/passwd": "passwd",
        "..\\..\\windows\\system.ini": "system.ini",
        "/abs/path/x.txt": "x.txt",
        "evil\u202etxt.exe": "eviltxt.exe",
        "a\x00b\x07.txt": "ab.txt",
        "%2e%2e%2fsecret": "%2e%2e%2fsecret",
        "n" * 10_000: "n" * 255,
        "..": "upload",
    }
    for raw, expected in hostile.items():
        # Built by hand: httpx would percent-encode the control characters for us.
        body_bytes = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="'
                      + raw.encode() + b'"\r\nContent-Type: text/plain\r\n\r\n'
                      b"hello hostile world\r\n--XyZ--\r\n")
        r = await client.post("/upload", content=body_bytes,
                              headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert r.status_code == 202, (raw[:20], r.text)
        body: dict[str, Any] = r.json()
        assert body["filename"] == expected, (raw[:20], body["filename"])
        row = await pool.fetchrow("SELECT filename FROM uploads WHERE upload_id = $1::uuid",
                                  body["upload_id"])
        assert row is not None and row["filename"] == expected


async def test_large_upload_streams_in_chunks(client: httpx.AsyncClient,
                                              pool: asyncpg.Pool) -> None:
    data = (WORDS * 100_000).encode()[: 5 * 1024 * 1024 + 17]
    r = await upload(client, "big.txt", data)
    assert r.status_code == 202
    upload_id = r.json()["upload_id"]
    chunks = await pool.fetch(
        "SELECT idx, length(data) AS n FROM upload_chunks WHERE upload_id = $1::uuid"
        " ORDER BY idx", upload_id)
    assert [c["idx"] for c in chunks] == list(range(6))
    assert sum(c["n"] for c in chunks) == len(data)
    done = await wait_terminal(client, r.json()["task_id"], timeout=60)
    assert done["status"] == "completed", done
