package workload

import (
	"encoding/base64"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"strconv"
)

// Write contents. A workload's bytes should compress as a real guest's do
// (s2 about 1.4–1.6×): the replication pipeline's ratio, its bandwidth and
// the RPO it reaches all depend on it, and zero-padded records would make
// every link look 50 times faster than it is. Real records are structured
// text (names, addresses, dates, enumerations: very compressible) mixed
// with high-entropy fields (ids, hashes, tokens, encrypted or already
// compressed values: not compressible at all). The mix below is tuned so
// that each workload's writes, measured in TestWriteCompression, land in
// that range.

var (
	firstNames = []string{"James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
		"David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
		"Sarah", "Carlos", "Karen", "Wei", "Aisha", "Hiroshi", "Olga", "Mateo", "Fatima", "Lars", "Priya"}
	lastNames = []string{"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
		"Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
		"Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Nakamura", "Novak"}
	cities = []string{"Springfield", "Riverside", "Franklin", "Greenville", "Bristol", "Clinton",
		"Fairview", "Salem", "Madison", "Georgetown", "Arlington", "Ashland", "Dover", "Oxford", "Milton"}
	streets = []string{"Main St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Elm St", "Lake View",
		"Hill Rd", "Park Ave", "Washington Blvd", "2nd St", "Sunset Blvd", "River Rd"}
	memoWords = []string{"invoice", "rent", "payroll", "refund", "transfer", "groceries", "utilities",
		"insurance", "subscription", "deposit", "withdrawal", "fee", "interest", "loan", "payment",
		"march", "april", "quarterly", "annual", "reimbursement", "order", "shipping", "tax"}
	statuses = []string{"pending", "settled", "cleared", "posted", "reviewed", "approved"}
	products = []string{"USB-C cable 2m", "wireless mouse", "27in monitor", "mechanical keyboard",
		"laptop stand", "HDMI adapter", "webcam 1080p", "noise cancelling headset", "desk lamp",
		"office chair", "paper A4 500 sheets", "toner cartridge", "SSD 1TB", "RAM 16GB DDR5"}
)

func pick(r *rand.Rand, ws []string) string { return ws[r.IntN(len(ws))] }

// appendToken appends n random bytes, base64-encoded: a hash, a session
// token, a signature — the incompressible part of a record.
func appendToken(dst []byte, r *rand.Rand, n int) []byte {
	var raw [64]byte
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			raw[i+j] = byte(v >> (8 * j))
		}
	}
	return base64.RawStdEncoding.AppendEncode(dst, raw[:n])
}

// appendBinary appends n random raw bytes: an encrypted or compressed
// field (a card number under tokenisation, a thumbnail).
func appendBinary(dst []byte, r *rand.Rand, n int) []byte {
	dst = slices.Grow(dst, n)
	i := 0
	for ; i+8 <= n; i += 8 {
		dst = binary.LittleEndian.AppendUint64(dst, r.Uint64())
	}
	if i < n {
		v := r.Uint64()
		for ; i < n; i++ {
			dst = append(dst, byte(v))
			v >>= 8
		}
	}
	return dst
}

// appendDate appends an ISO date and time within 2026, from r.
func appendDate(dst []byte, r *rand.Rand) []byte {
	dst = append(dst, "2026-"...)
	dst = appendPad2(dst, 1+r.IntN(12))
	dst = append(dst, '-')
	dst = appendPad2(dst, 1+r.IntN(28))
	dst = append(dst, 'T')
	dst = appendPad2(dst, r.IntN(24))
	dst = append(dst, ':')
	dst = appendPad2(dst, r.IntN(60))
	dst = append(dst, ':')
	dst = appendPad2(dst, r.IntN(60))
	return append(dst, 'Z')
}

func appendPad2(dst []byte, v int) []byte {
	if v < 10 {
		dst = append(dst, '0')
	}
	return strconv.AppendInt(dst, int64(v), 10)
}

// appendRecordLine appends one JSON-like line: the structured text of a
// business record, with a token and a binary field for entropy.
func appendRecordLine(dst []byte, r *rand.Rand) []byte {
	first, last := pick(r, firstNames), pick(r, lastNames)
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, int64(r.IntN(100_000_000)), 10)
	dst = append(dst, `,"name":"`...)
	dst = append(append(append(dst, first...), ' '), last...)
	dst = append(dst, `","email":"`...)
	dst = append(append(append(dst, first...), '.'), last...)
	dst = strconv.AppendInt(dst, int64(r.IntN(100)), 10)
	dst = append(dst, `@example.com","addr":"`...)
	dst = strconv.AppendInt(dst, int64(1+r.IntN(9999)), 10)
	dst = append(append(append(append(dst, ' '), pick(r, streets)...), ", "...), pick(r, cities)...)
	dst = append(dst, `","at":"`...)
	dst = appendDate(dst, r)
	dst = append(dst, `","memo":"`...)
	for w := 0; w < 1+r.IntN(4); w++ {
		if w > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, pick(r, memoWords)...)
	}
	dst = append(dst, `","status":"`...)
	dst = append(dst, pick(r, statuses)...)
	dst = append(dst, `","amount":`...)
	dst = strconv.AppendInt(dst, int64(r.IntN(1_000_000)), 10)
	dst = append(dst, '.')
	dst = appendPad2(dst, r.IntN(100))
	dst = append(dst, `,"sig":"`...)
	dst = appendToken(dst, r, 24)
	dst = append(dst, `","blob":"`...)
	dst = appendBinary(dst, r, 176)
	return append(dst, "\"}\n"...)
}

// fillRecords fills buf with record lines (the last one cut at the end).
func fillRecords(r *rand.Rand, buf []byte) {
	var line []byte
	for i := 0; i < len(buf); {
		line = appendRecordLine(line[:0], r)
		i += copy(buf[i:], line)
	}
}

// appendRowText appends a table row's text: a customer's profile, shorter
// than a record line, with its own token and binary field.
func appendRowText(dst []byte, r *rand.Rand) []byte {
	first, last := pick(r, firstNames), pick(r, lastNames)
	dst = append(append(append(dst, first...), ' '), last...)
	dst = append(dst, '|')
	dst = append(append(append(dst, first...), '.'), last...)
	dst = strconv.AppendInt(dst, int64(r.IntN(100)), 10)
	dst = append(dst, "@example.com|"...)
	dst = append(append(dst, pick(r, cities)...), '|')
	dst = appendDate(dst, r)
	dst = append(dst, '|')
	dst = append(append(dst, pick(r, statuses)...), '|')
	dst = appendToken(dst, r, 18)
	dst = append(dst, '|')
	return appendBinary(dst, r, 96)
}
