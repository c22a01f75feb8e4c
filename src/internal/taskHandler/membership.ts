/**
 * The node's membership with its master. On every connection generation the
 * node registers, then listens to the master's requests. It is a member from
 * its registration until the master says otherwise: the `Subscribe` stream
 * ends, a call is refused with NODE_NOT_REGISTERED, or a heartbeat answers
 * NOT_MEMBER or another incarnation. Then it registers again at once, on the
 * same connection. A join that fails is tried again on a backoff, which starts
 * over once the master has served the node as a member (after a stream that
 * ended without the master's word, only if it also lived 10 s).
 *
 * Readiness is held back on `member` while the node is not one.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as Connection from "../../Connection.js"
import * as Readiness from "../../Readiness.js"
import * as Retry from "../../Retry.js"
import * as TaskSource from "../../TaskSource.js"
import { errorMessage } from "../shared/format.js"
import { failOnDefect, forkLoop } from "../shared/loop.js"
import * as Stepper from "../shared/stepper.js"

export interface Options {
  readonly connection: Connection.Connection
  readonly source: TaskSource.TaskSource
  readonly heartbeatInterval: Duration.Duration
  /** How many tasks run now: each heartbeat tells the master. */
  readonly running: Effect.Effect<number>
  /**
   * For how much longer, in milliseconds, the master hears the node without a heartbeat (a fetch it holds, one
   * answered lately); zero or less: a heartbeat is due.
   */
  readonly heardFor: Effect.Effect<number>
  /** The master asks for a task to be cancelled. */
  readonly cancel: (taskId: string) => Effect.Effect<void>
  /** A heartbeat failed (it is logged here). */
  readonly onHeartbeatFailure: Effect.Effect<void>
  /** Sets readiness's `member` check, held by the task handler from its start. */
  readonly setMember: (result: Readiness.CheckResult) => Effect.Effect<void>
}

/** One registration: the calls made under it say so, and a refusal ends this one only, never a later one. */
export interface Member {
  readonly generation: number
  /** Counts registrations: one more on every join. */
  readonly join: number
  /** The master's incarnation as `Register` answered it; empty when the master does not say. */
  readonly incarnation: string
}

export interface Membership {
  /** The registration the node holds on the connection's current generation, if it holds one. */
  readonly current: Effect.Effect<Option.Option<Member>>
  /** Every registration, as it is made. */
  readonly joined: Stream.Stream<Member>
  /** A call made under `member` failed: if the failure says the master does not know the node, it joins again. */
  readonly observe: (member: Member, error: TaskSource.Failure) => Effect.Effect<void>
  /** A call made under `member` was answered: the master serves the node, and the rejoin backoff starts over. */
  readonly served: (member: Member) => Effect.Effect<void>
}

// Joining again after a join that failed: soon, then less often.
const rejoin = Retry.untilDone

// A refusal without the protocol's detail (a master that predates it) has the node register again at most this often.
const guessedRejoinEvery = 30_000

interface Joined {
  readonly member: Member
  /** Completed, with the reason, when the master says the node is no member. */
  readonly ended: Deferred.Deferred<string>
  /** When it was made, epoch millis. */
  readonly at: number
}

// A stream that ends without the master's word (a proxy's timeout, a master going away) has the node register
// again at once only when it lived this long; a shorter one is joined again on the backoff.
const heldAfter = 10_000

// A call of the task source that died (a bug in a source of the app's own) has failed, and says how: it must not end
// the loop that made it, or the node would never be a member again.
class SourceDied extends Data.TaggedError("SourceDied")<{ readonly message: string }> {}
const surviving = (what: string) => failOnDefect(what, (message) => new SourceDied({ message }))

/** Starts the membership's loops in the current scope. */
export const start = (options: Options): Effect.Effect<Membership, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { connection, source } = options
    const joined = yield* SubscriptionRef.make<Joined | undefined>(undefined)
    const joins = yield* Ref.make(0)
    const lastGuess = yield* Ref.make(Number.NEGATIVE_INFINITY)
    // The last registration the master served: a call made under it was answered.
    const lastServed = yield* Ref.make(0)
    const { setMember } = options

    const end = (member: Member, why: string) =>
      Effect.flatMap(
        SubscriptionRef.get(joined),
        (now) => now?.member.join === member.join ? Deferred.succeed(now.ended, why) : Effect.void
      )

    const observe = (member: Member, error: TaskSource.Failure | SourceDied) =>
      Effect.gen(function*() {
        if (error._tag === "SourceDied") return
        switch (TaskSource.membershipOf(error)) {
          case "NotMember":
            return yield* end(member, `the master does not know this node (${errorMessage(error)})`)
          case "MaybeNotMember": {
            const now = yield* Clock.currentTimeMillis
            if (now - (yield* Ref.get(lastGuess)) < guessedRejoinEvery) return
            yield* Ref.set(lastGuess, now)
            return yield* end(member, `the master may not know this node (${errorMessage(error)})`)
          }
        }
      })

    const served = (member: Member) => Ref.update(lastServed, (join) => Math.max(join, member.join))

    // Registers, then listens to the master until the registration ends; again and again, for one generation.
    const member = (generation: number) =>
      Effect.gen(function*() {
        const delays = yield* Stepper.make(rejoin)
        let failedInARow = 0
        yield* setMember(Readiness.CheckResult.Pending())
        while (true) {
          if (failedInARow > 0) yield* Effect.sleep(Option.getOrElse(yield* delays.next(undefined), () => 0))
          const registered = yield* Effect.either(surviving("Register")(source.register(generation)))
          if (registered._tag === "Left") {
            failedInARow++
            const why = `registering for generation ${generation} failed: ${errorMessage(registered.left)}`
            yield* setMember(Readiness.CheckResult.Failed({ message: why }))
            yield* Effect.logWarning(why)
            continue
          }
          const join = yield* Ref.updateAndGet(joins, (n) => n + 1)
          const now: Joined = {
            member: { generation, join, incarnation: registered.right.incarnation },
            ended: yield* Deferred.make<string>(),
            at: yield* Clock.currentTimeMillis
          }
          yield* SubscriptionRef.set(joined, now)
          // Passed only while this generation is the Ready one: a reply handled after the link was lost must not
          // overwrite the Pending set for the outage (the state changes before the loss is published, so a Pending
          // for a loss after this look still comes after this write).
          const state = yield* connection.state
          if (state._tag === "Ready" && state.generation === generation) {
            yield* setMember(Readiness.CheckResult.Passed())
          }
          yield* Effect.logInfo(`node registered for generation ${generation}`)
          const streamEnd = source.subscribe(generation).pipe(
            Stream.runForEach((request) => options.cancel(request.taskId)),
            surviving("Subscribe"),
            Effect.matchEffect({
              onSuccess: () => Effect.succeed("the master ended its stream"),
              onFailure: (error) =>
                Effect.as(observe(now.member, error), `the master's stream failed: ${errorMessage(error)}`)
            })
          )
          const first = yield* Effect.raceFirst(streamEnd, Deferred.await(now.ended))
          // The master's own word (a refusal, a heartbeat) says more than the stream's end it caused.
          const said = yield* Deferred.poll(now.ended)
          const why = yield* Option.getOrElse(said, () => Effect.succeed(first))
          const lived = (yield* Clock.currentTimeMillis) - now.at
          const served = (yield* Ref.get(lastServed)) === join
          yield* SubscriptionRef.set(joined, undefined)
          yield* Effect.logWarning(`${why}; registering again`)
          // Told it is no member: not ready until it is again. A stream that merely ended proves nothing either way.
          if (Option.isSome(said)) {
            yield* setMember(Readiness.CheckResult.Failed({ message: `${why}; registering again` }))
          }
          if (served && (Option.isSome(said) || lived >= heldAfter)) {
            failedInARow = 0
            yield* delays.reset
          } else {
            failedInARow++
          }
        }
      })

    const heartbeat = Effect.gen(function*() {
      const now = yield* current
      if (Option.isNone(now)) return
      const member = now.value
      const answer = yield* Effect.either(surviving("the heartbeat")(source.heartbeat(yield* options.running)))
      if (answer._tag === "Left") {
        yield* Effect.logWarning(`heartbeat failed: ${errorMessage(answer.left)}`)
        yield* options.onHeartbeatFailure
        return yield* observe(member, answer.left)
      }
      const { incarnation } = answer.right
      if (answer.right.member === false) return yield* end(member, "the master answered the heartbeat NOT_MEMBER")
      if (incarnation !== "" && member.incarnation !== "" && incarnation !== member.incarnation) {
        return yield* end(member, `the master restarted (incarnation ${incarnation}, was ${member.incarnation})`)
      }
      if (answer.right.member === true) yield* served(member)
    })

    const current: Effect.Effect<Option.Option<Member>> = Effect.zipWith(
      SubscriptionRef.get(joined),
      connection.state,
      (now, state) =>
        now !== undefined && state._tag === "Ready" && state.generation === now.member.generation
          ? Option.some(now.member)
          : Option.none()
    )

    yield* forkLoop(
      "membership",
      Stream.runDrain(connection.eachGeneration((generation) => Stream.fromEffect(member(generation))))
    )
    // Between generations the node holds no registration the master could serve.
    yield* forkLoop(
      "membership-pending",
      connection.transitions.pipe(
        Stream.filter((state) => state._tag !== "Ready"),
        Stream.runForEach(() => setMember(Readiness.CheckResult.Pending()))
      )
    )
    // While the node is a member, every interval, unless the master heard the node otherwise; between
    // registrations (a lost connection, a rejoin) it waits for the next one, and does not tick.
    const awaitMember = Stream.merge(joined.changes, connection.transitions).pipe(
      Stream.mapEffect(() => current),
      Stream.filter(Option.isSome),
      Stream.runHead
    )
    // A heartbeat is due an interval after the master last heard the node, so it never goes much longer unheard.
    const untilDue: Effect.Effect<void> = Effect.flatMap(
      options.heardFor,
      (heard) => heard <= 0 ? Effect.void : Effect.zipRight(Effect.sleep(heard), untilDue)
    )
    yield* forkLoop(
      "heartbeat",
      Effect.forever(
        awaitMember.pipe(
          Effect.zipRight(Effect.sleep(options.heartbeatInterval)),
          Effect.zipRight(untilDue),
          Effect.zipRight(heartbeat)
        )
      )
    )

    return {
      current,
      joined: joined.changes.pipe(Stream.filterMap((now) => Option.fromNullable(now?.member))),
      observe,
      served
    } satisfies Membership
  })
