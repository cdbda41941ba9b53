package hrl

import (
	"errors"
	"io"
	"os"
	"testing"
)

// BenchmarkAppendWrite4K measures the log's own cost of appending one
// 4 KiB guest write in steady state: encoding, CRC, buffer flushes into the
// page cache and segment switches. Every 4096 records (16 MiB) it syncs and
// trims everything, as the agent does once the process server acknowledges
// a batch, so the log's size stays bounded. The directory is on tmpfs when
// the machine has one, so that the disk's bandwidth (which
// BenchmarkAppendWrite4KSynced measures) does not hide the log's cost.
func BenchmarkAppendWrite4K(b *testing.B) {
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "hrl-bench-"); err == nil {
		defer os.RemoveAll(shm)
		dir = shm
	}
	benchAppend(b, dir, 4096, true)
}

// BenchmarkAppendWrite4KSynced appends 4 KiB writes on the test's
// temporary directory (a disk) and Syncs every 256 records (1 MiB
// batches), as the agent does before acknowledging a batch: durable
// throughput, bounded by the disk. It never trims.
func BenchmarkAppendWrite4KSynced(b *testing.B) { benchAppend(b, b.TempDir(), 256, false) }

func benchAppend(b *testing.B, dir string, syncEvery int, trim bool) {
	l, _ := mustOpen(b, dir, Options{})
	defer l.Close()
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 1; b.Loop(); i++ {
		seq, err := l.AppendWrite(uint16(i&3), int64(i)*4096, data)
		if err != nil {
			b.Fatal(err)
		}
		if i%syncEvery == 0 {
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
			if trim {
				if err := l.Trim(seq); err != nil {
					b.Fatal(err)
				}
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
