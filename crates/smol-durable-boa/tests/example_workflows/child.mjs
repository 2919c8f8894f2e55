export const meta = { name: "child", description: "Answers for one number" };
export default { n: args.n, answer: await agent(`child ${args.n ?? 0}`) };
