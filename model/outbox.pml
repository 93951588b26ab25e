/*
 * The outbox of inboxkit and its relays, for the spin model checker.
 *
 * Two handler transactions (producers) write outbox rows (a key, a sequence number) and
 * commit or roll back; two relays publish committed rows to the broker and delete them; a
 * downstream consumer reads the broker's queue in order and deduplicates by message id (an
 * inbox). Postgres is reduced to what the protocol touches: each row's state, its row lock
 * (FOR UPDATE, held by a relay's open transaction), the per-key transaction lock of the
 * enqueue, and the sequence. A relay's transaction is lost at any step (the relay crashed,
 * or its connection dropped while it runs on); the broker refuses publishes; all bounded.
 * model/README.md maps every step to the design, and says how to run it.
 *
 * Each atomic block is one SQL statement (or COMMIT) or one broker call: nothing can happen
 * between its parts, and a crash can happen between any two of them.
 *
 * Flags that break the protocol on purpose (spin must report a violation for each):
 *   -DCURSOR            relays claim the rows past a high-water mark over the sequence
 *                       (a cursor), not every pending row: a row whose sequence number
 *                       was taken before another's but which committed after it is never
 *                       published (no loss, liveness; check it with -DMAXREFUSE=0)
 *   -DSKIP_LOCKED_ONLY  relays claim any pending row with SKIP LOCKED, not only each key's
 *                       oldest: a key's later row overtakes its first (per-key order)
 *   -DNO_KEY_LOCK       enqueues take no per-key transaction lock: sequence order is no
 *                       longer commit order for a key (per-key order)
 *   -DNO_DEDUP          the downstream consumer applies every delivery: a relay that died
 *                       after the confirm re-sends, and the effect happens twice (shows
 *                       that re-sends happen, and that exactly once rests on the inbox)
 */

/* ---- bounds ---------------------------------------------------------------------- */
#ifndef MAXLOSS
#define MAXLOSS 2       /* relay transactions lost in a run: crashes, dropped connections */
#endif
#ifndef MAXREFUSE
#define MAXREFUSE 2     /* publishes the broker refuses in a run */
#endif
#ifndef LIMIT
#define LIMIT 2         /* refusals of one row before it is set aside as failed */
#endif

#define NR 3            /* outbox rows: producer 0 writes rows 0 and 1, producer 1 row 2 */
#define NK 2            /* keys */
#define NRELAY 2        /* relays */

/* ---- Postgres: the outbox table -------------------------------------------------- */
#define R_NONE        0 /* not written (yet) */
#define R_UNCOMMITTED 1 /* inserted by a transaction still open */
#define R_PENDING     2 /* committed, waiting to be published */
#define R_FAILED      3 /* set aside: refused LIMIT times, kept, blocks its key */
#define R_DELETED     4 /* published, confirmed and removed */
#define R_ROLLEDBACK  5 /* its transaction rolled back (or it was never written) */
byte rs[NR];            /* row state */
byte rkey[NR];          /* the row's key */
byte seq[NR];           /* its sequence number (nextval: taken at insert, never given back) */
byte lockedBy[NR];      /* relay+1 whose open transaction holds the row (FOR UPDATE); 0 if none */
byte tries[NR];         /* committed refusals of the row */
byte nseq;              /* the sequence */
byte keyLock[NK];       /* producer+1 holding the key's transaction lock; 0 if none */
bool keyFailed[NK];     /* a row of the key is set aside as failed */
#ifdef CURSOR
byte cursor;            /* the high-water mark: rows with seq < cursor are taken as done */
byte cursorOwner;       /* relay+1 holding the cursor row (FOR UPDATE); 0 if none */
#endif

/* ---- broker and downstream consumer ----------------------------------------------- */
byte pubs[NR];          /* confirmed publishes of the row's message (re-sends included) */
byte effect[NR];        /* downstream effects of the row's message */

/* ---- observers for the properties ------------------------------------------------- */
byte rank[NR];          /* the row's place in its key's commit order: 0, 1, ... */
byte nrank[NK];         /* rows of the key committed so far */
byte firstPub[NK];      /* rows of the key published at least once */
byte applied[NK];       /* rows of the key the downstream consumer has applied */

/* ---- environment ------------------------------------------------------------------ */
byte losses, refusals;
bool zombie[NRELAY];    /* the relay's transaction is gone; the relay has not noticed yet */

#define bit(m) (1 << (m))
#define committed(m) (rs[m] == R_PENDING || rs[m] == R_FAILED || rs[m] == R_DELETED)
#ifdef CURSOR
#define holdsAny(r) (cursorOwner == r + 1)
#else
#define holdsAny(r) (lockedBy[0] == r + 1 || lockedBy[1] == r + 1 || lockedBy[2] == r + 1)
#endif

/* An older row of the same key, committed and still in the table (pending, claimed by
 * someone, or failed): the NOT EXISTS of the claim sees it, locked or not. */
#define olderOpen(m, o) \
  (rkey[o] == rkey[m] && (rs[o] == R_PENDING || rs[o] == R_FAILED) && seq[o] < seq[m])
#define oldest(m) (!olderOpen(m, 0) && !olderOpen(m, 1) && !olderOpen(m, 2))

/* What a relay's claim statement takes: committed pending rows not locked by another
 * relay (SKIP LOCKED), only each key's oldest. */
#if defined(SKIP_LOCKED_ONLY)
#define eligible(m) (rs[m] == R_PENDING && lockedBy[m] == 0)
#elif defined(CURSOR)
/* a relay holding the cursor row has the outbox to itself: every committed row past the
 * high-water mark, in sequence order (which keeps each key's order) */
#define eligible(m) (rs[m] == R_PENDING && lockedBy[m] == 0 && seq[m] >= cursor)
#else
#define eligible(m) (rs[m] == R_PENDING && lockedBy[m] == 0 && oldest(m))
#endif
#ifdef CURSOR
#define anyEligible (cursorOwner == 0 && (eligible(0) || eligible(1) || eligible(2)))
#else
#define anyEligible (eligible(0) || eligible(1) || eligible(2))
#endif

/* ---- the downstream consumer: reads the queue in publish order, dedups by message id */
inline deliver(m) {
  if
  :: pubs[m] == 1 ->
     /* per-key order at the broker: a key's message n+1 is never published before n's
      * first publish */
     assert(rank[m] == firstPub[rkey[m]]);
     firstPub[rkey[m]]++
  :: else -> skip
  fi;
#ifndef NO_DEDUP
  if
  :: effect[m] == 0 ->
#endif
     effect[m]++;
     /* exactly once downstream: the inbox applies a message id once */
     assert(effect[m] <= 1);
     /* per-key order downstream: message n+1 is never applied before message n */
     assert(rank[m] == applied[rkey[m]]);
     applied[rkey[m]]++
#ifndef NO_DEDUP
  :: else -> skip        /* a duplicate: acked, not applied */
  fi
#endif
}

/* ---- producers: handler transactions that enqueue ---------------------------------- */

/* enqueue(trx, message): the key's transaction lock (waits while another open transaction
 * holds it), nextval, INSERT: one statement. */
#ifndef NO_KEY_LOCK
#define keyFree(k) (keyLock[k] == 0 || keyLock[k] == p + 1)
#define takeKey(k) keyLock[k] = p + 1
#else
#define keyFree(k) true
#define takeKey(k) skip
#endif
inline enqueue(k) {
  takeKey(k); rkey[m] = k; seq[m] = nseq; nseq++; rs[m] = R_UNCOMMITTED; m++
}
#define freeKeys(p) \
  keyLock[0] = (keyLock[0] == p + 1 -> 0 : keyLock[0]); \
  keyLock[1] = (keyLock[1] == p + 1 -> 0 : keyLock[1])

/* Producer 0 enqueues rows 0 and 1, producer 1 row 2, each in one transaction, under any
 * keys (row 0's is key 0: keys are alike). A transaction may abort at any point, waiting
 * for a key's lock included (a deadlock, a lock timeout, the handler throwing). */
active [2] proctype Producer() {
  byte p = _pid;          /* producers are pids 0 and 1 */
  byte m, first, last;
  if
  :: p == 0 -> first = 0; last = 1
  :: else -> first = 2; last = 2
  fi;
  m = first;
  do
  :: m > last -> break
  :: else ->
     if
     :: atomic { keyFree(0) -> enqueue(0) }
     :: atomic { m != 0 && keyFree(1) -> enqueue(1) }
     :: goto rollback
     fi
  od;
  if
  :: atomic {
       /* COMMIT: the rows (with the inbox key and the business write) become visible
        * together; NOTIFY is delivered now. Their place in their key is commit order. */
       for (m : first .. last) {
         rs[m] = R_PENDING;
         rank[m] = nrank[rkey[m]];
         nrank[rkey[m]]++
       }
       freeKeys(p);
       m = 0
     };
     goto end_producer
  :: goto rollback
  fi;
rollback:
  atomic {
    /* ROLLBACK: the rows go away (their sequence numbers are not given back) */
    for (m : first .. last) {
      rs[m] = R_ROLLEDBACK
    }
    freeKeys(p);
    m = 0
  };
end_producer:
  skip
}

/* ---- relays ------------------------------------------------------------------------ */
active [NRELAY] proctype Relay() {
  byte r = _pid - 2;      /* relays are pids 2 and 3 */
  byte mine, sent, conf, refused, m, best;

end_idle:
  do
  :: /* ---- claim: one SELECT ... FOR UPDATE SKIP LOCKED, a batch of every eligible row
      * (at most one per key), or only the first by sequence (a batch limit) ----------- */
     atomic {
       anyEligible ->
#ifdef CURSOR
       cursorOwner = r + 1;
#endif
       if
       :: for (m : 0 .. NR - 1) {
            if
            :: eligible(m) -> lockedBy[m] = r + 1; mine = mine | bit(m)
            :: else -> skip
            fi
          }
       :: best = NR;
          for (m : 0 .. NR - 1) {
            if
            :: eligible(m) && (best == NR || seq[m] < seq[best]) -> best = m
            :: else -> skip
            fi
          }
          lockedBy[best] = r + 1; mine = bit(best)
       fi;
       m = 0; best = 0
     };

     /* ---- publish every claimed row, in sequence order, and wait for its confirm; the
      * broker may refuse one (a nack, a produce error) ------------------------------------ */
     do
     :: atomic {
          best = NR;
          for (m : 0 .. NR - 1) {
            if
            :: (mine & bit(m)) && !(sent & bit(m)) && (best == NR || seq[m] < seq[best]) -> best = m
            :: else -> skip
            fi
          }
          m = 0;
          if
          :: best == NR -> best = 0; break
          :: else -> skip
          fi;
          sent = sent | bit(best);
          if
          :: /* confirmed: the message is in the broker's queue, for good. Nothing is
              * published before its transaction committed, nor if it rolled back (a relay
              * whose transaction is lost may re-send a row another relay deleted since) */
             assert(committed(best));
             pubs[best]++;
             deliver(best);
             conf = conf | bit(best)
          :: refusals < MAXREFUSE -> refusals++; refused = refused | bit(best)
          fi;
          best = 0
        }
     :: atomic { zombie[r] -> break }   /* the relay crashed: it stops here */
     od;

     /* ---- DELETE the confirmed rows, count the refusals (set aside as failed at the
      * limit), COMMIT: the row locks go with it. A lost transaction's COMMIT fails: nothing
      * changes, and the relay starts again with nothing in memory ----------------------- */
     atomic {
       if
       :: zombie[r] -> zombie[r] = false; mine = 0
       :: else -> skip
       fi;
       for (m : 0 .. NR - 1) {
         if
         :: mine & bit(m) ->
            lockedBy[m] = 0;
            if
            :: conf & bit(m) -> assert(pubs[m] > 0); rs[m] = R_DELETED
            :: refused & bit(m) ->
               tries[m]++;
               if
               :: tries[m] >= LIMIT -> rs[m] = R_FAILED; keyFailed[rkey[m]] = true
               :: else -> skip
               fi
            :: else -> skip
            fi
         :: else -> skip
         fi
       }
#ifdef CURSOR
       /* the high-water mark moves past the batch (checked with no refusals: a refused row
        * would need the mark held back) */
       for (m : 0 .. NR - 1) {
         if
         :: (mine & bit(m)) && seq[m] >= cursor -> cursor = seq[m] + 1
         :: else -> skip
         fi
       }
       cursorOwner = (cursorOwner == r + 1 -> 0 : cursorOwner);
#endif
       m = 0; mine = 0; sent = 0; conf = 0; refused = 0
     }
  od
}

/* A relay's transaction is lost, at any moment while it holds rows, bounded (pid 4: declared
 * after the relays): Postgres rolls it back and releases its locks. The relay crashed (it
 * stops at its next step, a choice it then has at every step) or its connection dropped (a
 * Postgres restart, a network cut, idle_in_transaction_session_timeout) while it goes on
 * publishing its batch. Either way what the broker confirmed stays published. */
#define releaseRows(r) \
  lockedBy[0] = (lockedBy[0] == r + 1 -> 0 : lockedBy[0]); \
  lockedBy[1] = (lockedBy[1] == r + 1 -> 0 : lockedBy[1]); \
  lockedBy[2] = (lockedBy[2] == r + 1 -> 0 : lockedBy[2])
#ifdef CURSOR
#define release(r) releaseRows(r); cursorOwner = (cursorOwner == r + 1 -> 0 : cursorOwner)
#else
#define release(r) releaseRows(r)
#endif
active proctype Environment() {
end_env:
  do
  :: atomic { losses < MAXLOSS && holdsAny(0) && !zombie[0] -> losses++; zombie[0] = true; release(0) }
  :: atomic { losses < MAXLOSS && holdsAny(1) && !zombie[1] -> losses++; zombie[1] = true; release(1) }
  od
}

/* No loss, liveness: under weak fairness, with bounded losses and refusals, every row ends
 * rolled back, published and applied once downstream, set aside as failed, or behind a
 * failed row of its key. Check with pan -a -f. */
#define done(m) \
  (rs[m] == R_ROLLEDBACK || (rs[m] == R_DELETED && effect[m] == 1) || rs[m] == R_FAILED || \
   (rs[m] == R_PENDING && keyFailed[rkey[m]]))
ltl delivered { <> (done(0) && done(1) && done(2)) }
