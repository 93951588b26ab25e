/*
 * The inbox protocol of inboxkit, for the spin model checker.
 *
 * One message id, published twice (a producer retry), so that two deliveries of the same
 * id compete; two consumers; a broker that redelivers what a consumer did not ack; Postgres
 * reduced to the inbox key, its row lock, the business effect and the crash-loop counter.
 * An environment process crashes consumers at any step, takes deliveries away from
 * consumers that keep running (a RabbitMQ channel lost, a Kafka rebalance), all bounded.
 * model/README.md maps every step to the code, and says how to run it.
 *
 * Each atomic block is one SQL statement or one broker call: nothing can happen between
 * its parts, and a crash can happen between any two of them.
 *
 * Flags that break the protocol on purpose (spin must report a violation for each):
 *   -DACK_BEFORE_COMMIT      ack as soon as the handler returned, then commit
 *   -DCLAIM_AFTER_HANDLER    run the handler first, insert the key last (same transaction)
 *   -DKEY_AFTER_COMMIT       check the key, commit the handler's write, then store the key
 *   -DNO_RECORD_DEAD_LETTER  ack a dead letter without recording it in the inbox
 *   -DRECORD_BEFORE_PUBLISH  record the dead letter before its publish was confirmed
 *   -DACK_ON_LOCK_TIMEOUT    take a claim that timed out waiting for a duplicate, and ack it
 *   -DNO_RETRY_BUDGET        hand a failing message back for ever instead of dead-lettering it
 * Crash-loop counting. The code (and so the default): a suspect's attempt is counted after
 * its claim succeeded, at every attempt, and taken back, with the key still held, when the
 * attempt ends without a crash; P7 (only real crashes reach the crash-loop limit) is
 * asserted. Variants that break P7:
 *   -DCOUNT_BEFORE_CLAIM     count it before the claim, once per delivery
 *   -DNO_UNCOUNT_ON_END      count it after the claim, but never take it back
 */
#ifndef COUNT_BEFORE_CLAIM
#define COUNT_AFTER_CLAIM
#ifndef NO_UNCOUNT_ON_END
#define UNCOUNT_ON_END
#endif
#endif
#define CHECK_CRASH_COUNT

/* ---- bounds ---------------------------------------------------------------------- */
#ifndef MAXTRY
#define MAXTRY 2        /* attempts of one process() call: retry.retries + 1 */
#endif
#ifndef LIMIT
#define LIMIT 1         /* crashLoopLimit */
#endif
#ifndef MAXCRASH
#define MAXCRASH 2      /* consumer crashes in a run */
#endif
#ifndef MAXLOSS
#define MAXLOSS 1       /* deliveries taken from a consumer that keeps running */
#endif
#ifndef MAXLATER
#define MAXLATER 1      /* claims given up at lock_timeout: retry_later, handed back */
#endif

#define NC 2            /* consumers */
#define ND 2            /* deliveries, both of message 0 */

/* ---- broker: one entry per delivery -------------------------------------------- */
#define READY   0       /* in the queue / not yet consumed past */
#define UNACKED 1       /* handed to consumer holder[d], not settled */
#define ACKED   2       /* acked, or its offset committed: gone for good */
byte bstate[ND];
byte holder[ND];
bool redelivered[ND];

/* ---- Postgres -------------------------------------------------------------------- */
#define NONE      0
#define PROCESSED 1
#define DEAD      2
byte key;               /* committed processed_messages row of M: NONE, PROCESSED, DEAD */
byte lockOwner;         /* consumer+1 whose open transaction inserted the key; 0 if none */
byte effect;            /* committed business effects of M */
byte attempts;          /* committed crash-loop count (inbox_attempts row) */
byte dlq;               /* dead-letter publishes of M confirmed by the broker */
bool dlAcked;           /* a delivery of M was acked as dead-lettered */

/* ---- observers for the properties ------------------------------------------------ */
byte inHandler;         /* consumers running M's handler right now */
byte realCrashes;       /* crashes of a consumer with a counted, unfinished attempt */
bool counted[NC];       /* this consumer's current attempt is in `attempts` */
bool running[NC];       /* this consumer is inside the handler */
bool holds[NC];         /* this consumer's open transaction holds the key */

/* ---- environment ----------------------------------------------------------------- */
byte crashes, losses, later;
bool crashReq[NC];
bool ownRequeue[NC];    /* RabbitMQ adapter's ownRequeues: this process requeued M itself */

/* outcomes of one delivery */
#define O_NONE   0
#define O_DONE   1      /* processed */
#define O_DUP    2      /* duplicate (of processed or dead_lettered) */
#define O_DEAD   3      /* dead_letter: retries exhausted */
#define O_LOOP   4      /* dead_letter: crash_loop */
#define O_LATER  5      /* retry_later: handed back to the broker */

#define live(d, c)  (bstate[d] == UNACKED && holder[d] == c)

/* ack or offset commit, when the delivery is still this consumer's (else abandoned:
 * amqplib refuses an ack on a dead channel, kafkajs a commit after a rebalance) */
inline ack(d, c) {
  atomic {
    if
    :: live(d, c) ->
       bstate[d] = ACKED;
       /* P2: nothing acked before its key committed (processed, or dead letter recorded) */
       assert(key != NONE);
       /* P3: nothing lost: acked means applied once or in the dead-letter queue */
       assert(effect == 1 || dlq > 0)
    :: else -> skip
    fi
  }
}

/* ROLLBACK: the key and the handler's writes go away together */
inline rollback(c) {
  atomic {
    if
    :: holds[c] -> lockOwner = 0; holds[c] = false
    :: else -> skip
    fi
  }
}

/* The handler: its business write in the open transaction, or a thrown error. */
inline handler(c, ok) {
  atomic { inHandler++; running[c] = true;
           /* P6: the claim serialises handlers: one at a time per message */
           assert(inHandler <= 1) }
  if
  :: ok = true
  :: ok = false
  fi;
  atomic { inHandler--; running[c] = false }
}

/* After a failed attempt (rolled back): a transient error gets a new attempt while the
 * retry budget lasts; a permanent one, or the last attempt's, makes a dead letter. */
inline failed(try, out) {
  if
  :: try < MAXTRY -> try++
  :: true ->
#ifndef NO_RETRY_BUDGET
     out = O_DEAD
#else
     out = O_LATER    /* handed back to the broker to try again, for ever */
#endif
  fi
}

/* INSERT ... ON CONFLICT DO NOTHING on the key: waits while another transaction holds
 * the key; a committed key means duplicate; else this transaction owns the message.
 * A wait may end at lock_timeout instead (retry_later). */
inline claim(c, out) {
  if
  :: atomic { lockOwner == 0 ->
       if
       :: key != NONE -> out = O_DUP
       :: else -> lockOwner = c + 1; holds[c] = true
       fi }
  :: atomic { lockOwner != 0 && lockOwner != c + 1 && later < MAXLATER ->
       later++;
#ifndef ACK_ON_LOCK_TIMEOUT
       out = O_LATER
#else
       out = O_DUP      /* taken for a duplicate: acked */
#endif
     }
  fi
}

/* inbox_attempts: INSERT ... ON CONFLICT DO UPDATE attempts + 1, its own commit */
inline countAttempt(c, out) {
  atomic {
    attempts++; counted[c] = true;
    if
    :: attempts > LIMIT ->
#ifdef CHECK_CRASH_COUNT
       /* P7: only a real crash counts towards a crash loop */
       assert(realCrashes >= LIMIT);
#endif
       out = O_LOOP
    :: else -> skip
    fi
  }
}

/* Publish to the dead-letter target and wait for the broker's confirm. (A publish not
 * confirmed hands the delivery back: for the protocol's state that is a crash at this
 * point, which the model has, minus the restart.) */
inline publishDeadLetter() {
  atomic { dlq++ }
}

/* recordDeadLetter: INSERT ... status dead_lettered ON CONFLICT DO NOTHING (a key already
 * there is left as it is; a key in another open transaction is waited for), clearing the
 * crash-loop count. (Postgres not answering hands the delivery back: as above.) */
inline recordDeadLetter() {
  atomic { lockOwner == 0 ->
    if
    :: key == NONE -> key = DEAD
    :: else -> skip
    fi;
    attempts = 0 }
}

/* Crashes and lost deliveries, at any moment, bounded. */
active proctype Environment() {
end_env:
  do
  :: atomic { crashes < MAXCRASH && !crashReq[0] -> crashes++; crashReq[0] = true }
  :: atomic { crashes < MAXCRASH && !crashReq[1] -> crashes++; crashReq[1] = true }
  :: atomic { losses < MAXLOSS && bstate[0] == UNACKED -> losses++; bstate[0] = READY; redelivered[0] = true }
  :: atomic { losses < MAXLOSS && bstate[1] == UNACKED -> losses++; bstate[1] = READY; redelivered[1] = true }
  od
}

/* Consumers 0 and 1 (pids 1 and 2: the environment, declared first, has pid 0). */
active [NC] proctype Consumer() {
  byte c = _pid - 1;
  byte d, out, try;
  bool suspect, ok, cleared;

end_loop:
  do
  :: {
       /* ---- a delivery arrives (prefetch 1 per consumer) --------------------------- */
       atomic {
         if
         :: bstate[0] == READY -> d = 0
         :: bstate[1] == READY -> d = 1
         fi;
         bstate[d] = UNACKED; holder[d] = c;
         suspect = redelivered[d] && !ownRequeue[c];
         if
         :: redelivered[d] -> ownRequeue[c] = false    /* ownRequeues.take(id) */
         :: else -> skip
         fi;
         out = O_NONE; try = 1; cleared = false
       }

       /* ---- a suspect (may repeat a crash): look up first, count -------------------- */
       if
       :: atomic { suspect && key != NONE -> out = O_DUP }   /* readStored: a duplicate */
       :: atomic { suspect && key == NONE -> skip };        /* readStored: not there */
#ifndef COUNT_AFTER_CLAIM
          countAttempt(c, out)
#else
          skip
#endif
       :: !suspect -> skip
       fi;

       /* ---- attempts: each one transaction ------------------------------------------ */
       do
       :: out != O_NONE -> break
       :: else ->
#ifdef KEY_AFTER_COMMIT
          /* SELECT the key, run the handler and commit, store the key afterwards */
          if
          :: atomic { key != NONE -> out = O_DUP }; break
          :: atomic { key == NONE -> skip }
          fi;
          handler(c, ok);
          if
          :: ok ->
             atomic { effect++; assert(effect <= 1); assert(!dlAcked) };   /* P1, P5 */
             atomic { lockOwner == 0 -> if :: key == NONE -> key = PROCESSED :: else -> skip fi };
             out = O_DONE
          :: else -> failed(try, out)
          fi
#else
#ifndef CLAIM_AFTER_HANDLER
          claim(c, out);
          if
          :: out != O_NONE -> break
          :: else -> skip
          fi;
#ifdef COUNT_AFTER_CLAIM
          if
          :: suspect ->
             countAttempt(c, out);
             if
             :: out == O_LOOP -> rollback(c); break
             :: else -> skip
             fi
          :: else -> skip
          fi;
#endif
          handler(c, ok);
#else
          handler(c, ok);
          if
          :: ok ->
             claim(c, out);
             if
             :: out != O_NONE -> break
             :: else -> skip
             fi
          :: else -> skip
          fi;
#endif
          if
          :: ok ->
             /* clearAttempts inside the transaction (suspects) */
             cleared = suspect;
#ifdef ACK_BEFORE_COMMIT
             ack(d, c);
#endif
             /* COMMIT: the key and the business effect together */
             atomic {
               key = PROCESSED; effect++;
               /* P1: no effect applied twice */
               assert(effect <= 1);
               /* P5: nothing applied after its dead letter was acked */
               assert(!dlAcked);
               if
               :: cleared -> attempts = 0
               :: else -> skip
               fi;
               lockOwner = 0; holds[c] = false; counted[c] = false
             };
             out = O_DONE
          :: else ->
#ifdef UNCOUNT_ON_END
             /* the attempt ended without a crash: take its count back while the key is
              * still held, so that no other suspect sees it */
             atomic {
               if
               :: counted[c] && attempts > 0 -> attempts--; counted[c] = false
               :: else -> skip
               fi
             };
#endif
             rollback(c);
             failed(try, out)
          fi
#endif
       od;
       counted[c] = false;

       /* ---- settle: what the adapter tells the broker ---------------------------------- */
       if
       :: out == O_DONE || out == O_DUP -> ack(d, c)
       :: out == O_LATER ->
          /* nack with requeue after a backoff (Kafka: pause the partition, seek back) */
          atomic {
            if
            :: live(d, c) -> bstate[d] = READY; redelivered[d] = true; ownRequeue[c] = true
            :: else -> skip
            fi
          }
       :: out == O_DEAD || out == O_LOOP ->
#ifdef RECORD_BEFORE_PUBLISH
          recordDeadLetter();
          publishDeadLetter();
#else
          publishDeadLetter();
#ifndef NO_RECORD_DEAD_LETTER
          recordDeadLetter();
#endif
#endif
          atomic {
            if
            :: live(d, c) ->
               bstate[d] = ACKED; dlAcked = true;
#ifndef NO_RECORD_DEAD_LETTER
               assert(key != NONE);                    /* P2 */
#endif
               assert(effect == 1 || dlq > 0)          /* P3 */
            :: else -> skip
            fi
          }
       fi;
       /* forget this delivery, so that idle consumers are all alike */
       d_step { d = 0; out = O_NONE; try = 0; suspect = false; ok = false; cleared = false }
     } unless {
       /* ---- crash: the open transaction rolls back, unacked deliveries go back -------- */
       atomic {
         crashReq[c] ->
         crashReq[c] = false;
         if
         :: holds[c] -> lockOwner = 0; holds[c] = false
         :: else -> skip
         fi;
         if
         :: running[c] -> running[c] = false; inHandler--
         :: else -> skip
         fi;
#ifdef CHECK_CRASH_COUNT
         if
         :: counted[c] -> realCrashes++
         :: else -> skip
         fi;
#endif
         counted[c] = false;
         if
         :: live(0, c) -> bstate[0] = READY; redelivered[0] = true
         :: else -> skip
         fi;
         if
         :: live(1, c) -> bstate[1] = READY; redelivered[1] = true
         :: else -> skip
         fi;
         ownRequeue[c] = false;
         d = 0; out = O_NONE; try = 0; suspect = false; ok = false; cleared = false
       }
     }
  od
}

/* P4, liveness: under weak fairness, with bounded crashes, losses and hand-backs, every
 * delivery ends acked (processed, duplicate or dead-lettered). Check with pan -a -f. */
ltl settles { <> (bstate[0] == ACKED && bstate[1] == ACKED) }
