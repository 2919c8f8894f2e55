// A person in the loop: an agent drafts a plan, a reviewer approves it, rejects it or asks for
// a revision (with a comment the agent works from), round after round. Nobody answering within
// the timeout counts as a rejection.
//
//   smol-durable run examples/workflows/approval.mjs --args-task "tidy the README"
//   # it prints the run id and the command that answers; in another terminal:
//   smol-durable signal run_… review --data '{"decision": "revise", "comment": "shorter"}'
//   smol-durable signal run_… review --data '{"decision": "approve"}'
import { waitFor, runId } from "workflow:extra";

export const meta = {
  name: "approval",
  description: "An agent drafts a plan; a person approves, rejects or asks for a revision",
  phases: [
    { title: "draft", detail: "the agent writes or revises the plan" },
    { title: "review", detail: "a person answers with the signal `review`" },
  ],
};

const review = {
  type: "object",
  required: ["decision"],
  properties: {
    decision: { enum: ["approve", "reject", "revise"] },
    comment: { type: "string" },
  },
  additionalProperties: false,
};

export default async function (args) {
  const task = args.task ?? "tidy the README";
  const rounds = Number(args.maxRounds ?? 3);
  const timeoutMs = Number(args.timeoutMs ?? 24 * 60 * 60 * 1000);
  phase("draft");
  let plan = await agent(`Draft a short plan to ${task}.`);
  for (let round = 1; round <= rounds; round++) {
    phase("review");
    log(`round ${round} of run ${runId}: ${plan}`);
    const answer = await waitFor("review", {
      description: `Round ${round}: approve, reject or revise this plan: ${plan}`,
      schema: review,
      timeoutMs,
      default: { decision: "reject", comment: "nobody answered in time" },
    });
    if (answer.decision !== "revise") {
      return { task, plan, decision: answer.decision, comment: answer.comment ?? null, rounds: round };
    }
    phase("draft");
    plan = await agent(`Revise this plan to ${task}: ${plan}\nReviewer's comment: ${answer.comment ?? ""}`);
  }
  return { task, plan, decision: "reject", comment: "too many revisions", rounds };
}
