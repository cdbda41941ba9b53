package hrl

import (
	"errors"
	"io"
	"os"
	"testing"
)

// BenchmarkAppendWrite4K measures the log's own cost of appending one
// 4 KiB guest write: encoding, CRC, buffer flushes into the page cache and
// the segment switches, with no Sync. The directory is on tmpfs when the
// machine has one, because a run writes gigabytes, and on a disk the
// kernel's writeback (and the fsync at each segment switch) then throttles
// it to the disk's bandwidth, which BenchmarkAppendWrite4KSynced measures.
func BenchmarkAppendWrite4K(b *testing.B) {
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "hrl-bench-"); err == nil {
		defer os.RemoveAll(shm)
		dir = shm
	}
	benchAppend(b, dir, 0)
}

// BenchmarkAppendWrite4KSynced appends 4 KiB writes on the test's
// temporary directory and Syncs every 256 records (1 MiB batches), as the
// agent does before acknowledging a batch: durable throughput, bounded by
// the disk.
func BenchmarkAppendWrite4KSynced(b *testing.B) { benchAppend(b, b.TempDir(), 256) }

func benchAppend(b *testing.B, dir string, syncEvery int) {
	l, _ := mustOpen(b, dir, Options{})
	defer l.Close()
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 1; b.Loop(); i++ {
		if _, err := l.AppendWrite(uint16(i&3), int64(i)*4096, data); err != nil {
			b.Fatal(err)
		}
		if syncEvery > 0 && i%syncEvery == 0 {
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRead measures draining 4 KiB write records with a Reader.
func BenchmarkRead(b *testing.B) {
	l, _ := mustOpen(b, b.TempDir(), Options{})
	defer l.Close()
	data := make([]byte, 4096)
	const n = 4096 // 16 MiB of records, read over and over
	for i := range n {
		if _, err := l.AppendWrite(0, int64(i)*4096, data); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	r, err := l.NewReader(0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_, err := r.Next()
		if errors.Is(err, io.EOF) {
			r.Close()
			if r, err = l.NewReader(0); err != nil {
				b.Fatal(err)
			}
			_, err = r.Next()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
