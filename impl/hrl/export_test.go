package hrl

// crash simulates the process dying: the files are closed without flushing
// the write buffer, so buffered records are lost as they would be.
func (l *Log) crash() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.wbuf = l.wbuf[:0]
	l.closed = true
}

// active is the path of the active segment and how many of its bytes are
// durable: a crash may cut it anywhere after that.
func (l *Log) active() (path string, syncedOff int64) {
	return l.segPath(l.segs[len(l.segs)-1].first), l.syncedOff
}
