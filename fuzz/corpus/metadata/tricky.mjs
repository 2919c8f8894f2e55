export const meta = { name: `t`, description: "q\"uote", whenToUse: null, phases: [] }; // c
/* export const meta = 1 */ export default async function (args, ctx) { return args; }
