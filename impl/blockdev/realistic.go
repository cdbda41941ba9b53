package blockdev

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
)

var logWords = []string{
	"INFO", "WARN", "DEBUG", "request", "completed", "user", "session", "GET", "POST",
	"/api/v1/orders", "/healthz", "status=200", "status=404", "latency_ms=", "db", "commit",
	"txn", "checkpoint", "flushed", "pages", "cache", "hit", "miss", "worker", "started",
}

// FillRealistic fills buf, block by block, with the data v2a measures and
// simulates on: half the 4 KiB blocks log-like text (compressible), half
// random bytes (incompressible, like media or encrypted files), chosen by r.
// It is the reference data of the benchmarks and of simulated guest disks.
func FillRealistic(r *rand.Rand, buf []byte) {
	for off := 0; off < len(buf); off += BlockSize {
		end := min(off+BlockSize, len(buf))
		blk := buf[off:end]
		if r.IntN(2) == 0 {
			// Eight random bytes per draw (a draw per byte was most of the
			// cost of generating a simulated guest's writes).
			i := 0
			for ; i+8 <= len(blk); i += 8 {
				binary.LittleEndian.PutUint64(blk[i:], r.Uint64())
			}
			for ; i < len(blk); i++ {
				blk[i] = byte(r.Uint32())
			}
			continue
		}
		i := 0
		var lineBuf [128]byte // longer lines grow onto the heap
		for i < len(blk) {
			line := strconv.AppendInt(lineBuf[:0], int64(r.IntN(1_000_000_000)), 10)
			for w := 0; w < 6; w++ {
				line = append(line, ' ')
				line = append(line, logWords[r.IntN(len(logWords))]...)
			}
			line = strconv.AppendInt(append(line, ' '), int64(r.IntN(5000)), 10)
			line = append(line, '\n')
			i += copy(blk[i:], line)
		}
	}
}
