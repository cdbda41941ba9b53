package proto

import (
	"fmt"
	"strconv"
	"strings"
)

// Host names of the well-known endpoints, each a component's default peer.
// Ports are runtime's (runtime.PortConfig …).
const (
	HostConfigServer = "cs01"          // the configuration server, on premises
	HostStorage      = "storage.azure" // the storage account's public endpoint
	HostService      = "asr.azure"     // Site Recovery's service endpoint (the Azure side)
)

// Container names, each the suffix of a storage account's container: a
// deployment prefixes them all with one ContainerPrefix, so that several
// deployments share an account.
const (
	// ContainerCache holds sealed stream items, named by CacheBlobName:
	// the process server uploads them, the Azure side applies and deletes them.
	ContainerCache = "cache"
	// ContainerReplica holds the replica disks (page blobs) and their
	// snapshots, the recovery points.
	ContainerReplica = "replica"
	// ContainerCatalog holds each machine's and each group's catalog (JSON).
	ContainerCatalog = "catalog"
)

// Containers lists every container a deployment uses, in a fixed order.
func Containers() []string { return []string{ContainerCache, ContainerReplica, ContainerCatalog} }

// cacheSeqDigits is the width of the sequence number in a cache blob name:
// zero-padded so that a listing's lexical order is the stream's order.
const cacheSeqDigits = 20

// CacheBlobName is the name, in the cache container, of a machine's stream
// item seq: "<machine>/<seq, 20 digits>". It is also the associated data
// the item is sealed under, so an item moved to another name does not open.
func CacheBlobName(machine string, seq uint64) string {
	return fmt.Sprintf("%s/%0*d", machine, cacheSeqDigits, seq)
}

// ParseCacheBlobName is CacheBlobName's inverse. A name another writer
// left in the container (a different shape) is an error, never a guess.
func ParseCacheBlobName(name string) (machine string, seq uint64, err error) {
	i := strings.LastIndexByte(name, '/')
	if i <= 0 {
		return "", 0, fmt.Errorf("proto: cache blob %q is not <machine>/<seq>", name)
	}
	digits := name[i+1:]
	if len(digits) != cacheSeqDigits {
		return "", 0, fmt.Errorf("proto: cache blob %q: sequence is not %d digits", name, cacheSeqDigits)
	}
	seq, err = strconv.ParseUint(digits, 10, 64)
	if err != nil || strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return "", 0, fmt.Errorf("proto: cache blob %q: sequence is not a number", name)
	}
	return name[:i], seq, nil
}
