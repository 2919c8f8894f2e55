export const meta = { name: "missing-default-export", description: "A script without a default export fails" };

const notExported = await agent("runs before the check?");
