package main

// Schema migrations at start, as orchestrator_app/schema.py applies them (baseline.py
// calls it): migrations/NNN_*.sql in order, once each, recorded with their SHA-256 in
// schema_migrations, under the same advisory lock, each file in its own transaction.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationLock is schema._LOCK_ID ("PAYMENT").
const migrationLock int64 = 0x5041594D454E54

const trackingTable = `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
`

var migrationFile = regexp.MustCompile(`^(\d{3,})_[A-Za-z0-9_]+\.sql$`)

type migration struct {
	version, name, sql, checksum string
}

// migrationsDir is the repository's migrations/: next to this source (../../migrations),
// else under the working directory.
func migrationsDir() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..", "migrations")
		if info, err := os.Stat(dir); err == nil && info.IsDir() {
			return dir
		}
	}
	return "migrations"
}

func discover(dir string) ([]migration, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(paths) == 0 {
		return nil, fmt.Errorf("migrations directory %s not found or empty", dir)
	}
	sort.Strings(paths)
	var found []migration
	seen := map[string]bool{}
	for _, path := range paths {
		name := filepath.Base(path)
		m := migrationFile.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("%s: name must look like 001_description.sql", name)
		}
		if seen[m[1]] {
			return nil, fmt.Errorf("two migration files share version %s", m[1])
		}
		seen[m[1]] = true
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		// Path.read_text: universal newlines
		text := strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n")
		sum := sha256.Sum256([]byte(text))
		found = append(found, migration{m[1], name, text, hex.EncodeToString(sum[:])})
	}
	return found, nil
}

func migrate(ctx context.Context, databaseURL string) error {
	migrations, err := discover(migrationsDir())
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// Session-level lock: a second runner waits here, then finds nothing to do.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLock)
	if _, err := conn.Exec(ctx, trackingTable); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, "SELECT version, filename, checksum FROM schema_migrations")
	if err != nil {
		return err
	}
	applied := map[string][2]string{}
	for rows.Next() {
		var version, filename, checksum string
		if err := rows.Scan(&version, &filename, &checksum); err != nil {
			return err
		}
		applied[version] = [2]string{filename, checksum}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range migrations {
		if row, ok := applied[m.version]; ok {
			if row[1] != m.checksum {
				return fmt.Errorf("%s changed after it was applied (as %s); add a new migration instead",
					m.name, row[0])
			}
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil { // no arguments: simple protocol
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, filename, checksum) "+
				"VALUES ($1, $2, $3)", m.version, m.name, m.checksum)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}
